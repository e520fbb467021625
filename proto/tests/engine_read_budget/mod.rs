//! The coordinator's read budget (`limits.max_read_bytes_in_flight`): a get costs its
//! sender a few bytes while the replica copies it pulls in may weigh megabytes, so the
//! bytes coordinated reads hold are bounded at the engine, by the objects' real sizes.

use super::engine_harness::*;
use super::{a, client_error};
use shoal_proto::wire::{ClientResponse, PeerRequest, PeerResponse, Response};
use shoal_proto::{
    CausalContext, Command, Dot, EngineConfig, Object, RequestError, SiblingValue, StorageOp,
    MAX_UNSIZED_READS, RESERVE_SHARE,
};

/// Bytes of the large value: three copies are more than half of [`BUDGET`], two reads'
/// copies more than all of it.
const LARGE: usize = 30 * 1024;
/// The read budget of these tests.
const BUDGET: usize = 100 * 1024;

/// Reads ask every replica at once here: the budget is about N copies per read.
fn budget_config() -> EngineConfig {
    let mut cfg = read_all_config();
    cfg.limits.max_read_bytes_in_flight = BUDGET;
    cfg
}

/// A cluster of five whose node `a` is the first primary of two keys: one holding a
/// [`LARGE`] value on every replica, one a small value.
fn cluster_with_keys() -> (Cluster, Vec<u8>, Object, Vec<u8>, Object) {
    let mut c = Cluster::new(5, 16, budget_config(), 7);
    let large_key = c.key_where(|p| p[0] == a());
    let small_key = (0u32..)
        .map(|i| format!("small-{i}").into_bytes())
        .find(|k| c.prefs(k)[0] == a() && *k != large_key)
        .expect("a key first-owned by a");
    let dot = Dot::new(c.actor(&a()), 1);
    let object = |value: Vec<u8>| {
        let mut o = Object::new();
        o.update(&CausalContext::new(), SiblingValue::Data(value), dot, T0)
            .expect("fresh dot");
        o
    };
    let large = object(vec![7; LARGE]);
    let small = object(b"small".to_vec());
    for n in c.prefs(&large_key) {
        c.preload(&n, &large_key, &large);
    }
    for n in c.prefs(&small_key) {
        c.preload(&n, &small_key, &small);
    }
    (c, large_key, large, small_key, small)
}

fn sends(cmds: &[Command]) -> Vec<&Command> {
    cmds.iter()
        .filter(|c| matches!(c, Command::Send { .. }))
        .collect()
}

fn storage_read(cmds: &[Command]) -> Command {
    let reads: Vec<&Command> = cmds
        .iter()
        .filter(|c| {
            matches!(
                c,
                Command::Storage {
                    op: StorageOp::Read { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(reads.len(), 1, "one local read in {cmds:?}");
    reads[0].clone()
}

fn is_get_answer(cmds: &[Command], inbound: u64) -> bool {
    cmds.iter().any(|c| {
        matches!(c, Command::Respond { id, response: Response::Client(ClientResponse::Get(_)) } if id.0 == inbound)
    })
}

#[test]
fn past_half_the_budget_large_reads_are_refused_before_any_replica_is_asked_and_small_ones_fit() {
    let (mut c, large_key, large, small_key, small) = cluster_with_keys();
    let three_copies = 3 * large.encoded_len();
    assert!(three_copies > BUDGET / 2 && 2 * three_copies > BUDGET);

    // With nothing held, a read asks every replica at once.
    let first = c.client(&a(), 1, get(&large_key));
    let first_sends: Vec<Command> = sends(&first).into_iter().cloned().collect();
    assert_eq!(first_sends.len(), 2, "{first:?}");
    assert_eq!(c.run_storage(&a(), &storage_read(&first)), vec![]);
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), three_copies);

    // Past half the budget, the next read reads its own copy first, asking nobody...
    let second = c.client(&a(), 2, get(&large_key));
    assert!(
        sends(&second).is_empty(),
        "asked replicas at once: {second:?}"
    );
    // ... and its three copies do not fit: refused, nothing sent, nothing held.
    let refused = c.run_storage(&a(), &storage_read(&second));
    assert_eq!(refused, vec![client_error(2, RequestError::Overloaded)]);
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), three_copies);

    // A small read fits beside the large one: it asks the replicas once sized.
    let third = c.client(&a(), 3, get(&small_key));
    assert!(sends(&third).is_empty(), "{third:?}");
    let asked = c.run_storage(&a(), &storage_read(&third));
    assert_eq!(sends(&asked).len(), 2, "{asked:?}");
    for send in sends(&asked) {
        let done = c.reply(&a(), send, Ok(PeerResponse::Object(Some(small.clone()))));
        if is_get_answer(&done, 3) {
            assert!(done.iter().all(|c| !matches!(c, Command::Send { .. })));
        }
    }

    // The first read ends; everything it held is given back.
    let mut answered = false;
    for send in &first_sends {
        let done = c.reply(&a(), send, Ok(PeerResponse::Object(Some(large.clone()))));
        answered |= is_get_answer(&done, 1);
    }
    assert!(answered, "the first read was answered");
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), 0);
    assert_eq!(c.engine(&a()).inflight(), 0);

    // With the budget free again, a large read asks every replica at once.
    let again = c.client(&a(), 4, get(&large_key));
    assert_eq!(sends(&again).len(), 2, "{again:?}");
}

#[test]
fn a_reply_larger_than_the_local_copy_is_charged_its_size_until_the_read_ends() {
    let (mut c, large_key, large, _, _) = cluster_with_keys();
    // A key the coordinator has no copy of: the replicas' copies are charged as they
    // arrive.
    let key = (0u32..)
        .map(|i| format!("remote-{i}").into_bytes())
        .find(|k| c.prefs(k)[0] == a() && *k != large_key)
        .expect("a key first-owned by a");
    for n in c.prefs(&key).into_iter().skip(1) {
        c.preload(&n, &key, &large);
    }
    let cmds = c.client(&a(), 1, get(&key));
    c.run_storage(&a(), &storage_read(&cmds));
    let local = c.engine(&a()).read_bytes_in_flight();
    let asked: Vec<Command> = sends(&cmds).into_iter().cloned().collect();
    c.reply(
        &a(),
        &asked[0],
        Ok(PeerResponse::Object(Some(large.clone()))),
    );
    assert_eq!(
        c.engine(&a()).read_bytes_in_flight(),
        local + large.encoded_len()
    );
    c.reply(
        &a(),
        &asked[1],
        Ok(PeerResponse::Object(Some(large.clone()))),
    );
    // Both replied: the read ends (the local copy gets its repair) and holds nothing.
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), 0);
}

#[test]
fn a_burst_of_reads_asks_replicas_before_sizing_only_up_to_the_bound() {
    let (mut c, _, _, small_key, _) = cluster_with_keys();
    let mut storage = Vec::new();
    for i in 0..MAX_UNSIZED_READS as u64 + 4 {
        let cmds = c.client(&a(), i + 1, get(&small_key));
        let expected = if (i as usize) < MAX_UNSIZED_READS {
            2
        } else {
            0
        };
        assert_eq!(sends(&cmds).len(), expected, "read {i}: {cmds:?}");
        storage.push(storage_read(&cmds));
    }
    // Sizing one of the first reads frees its place: the next read asks at once again.
    c.run_storage(&a(), &storage[0]);
    let next = c.client(&a(), 100, get(&small_key));
    assert_eq!(sends(&next).len(), 2, "{next:?}");
    // A held-back read asks the replicas once its own copy is read.
    let late = c.run_storage(&a(), &storage[MAX_UNSIZED_READS]);
    assert_eq!(sends(&late).len(), 2, "{late:?}");
}

#[test]
fn a_held_back_read_that_times_out_asks_nobody_and_holds_nothing() {
    let (mut c, large_key, _, _, _) = cluster_with_keys();
    let first = c.client(&a(), 1, get(&large_key));
    c.run_storage(&a(), &storage_read(&first));
    let held = c.engine(&a()).read_bytes_in_flight();
    let second = c.client(&a(), 2, get(&large_key));
    assert!(sends(&second).is_empty());
    // Both reads' deadlines pass before the second's own copy is read.
    let later = c.now + c.cfg.replication.request_timeout * 2;
    let timed_out = c.timeout(&a(), later);
    assert!(
        !timed_out.iter().any(|c| matches!(
            c,
            Command::Send {
                request: PeerRequest::Read { .. },
                ..
            }
        )),
        "{timed_out:?}"
    );
    assert!(
        timed_out.contains(&client_error(
            2,
            RequestError::Timeout { acks: 0, needed: 2 }
        )),
        "{timed_out:?}"
    );
    assert!(held > 0);
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), 0);
    // The late storage reply of the second read changes nothing.
    assert_eq!(c.run_storage(&a(), &storage_read(&second)), vec![]);
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), 0);
}

#[test]
fn replies_that_arrive_before_the_local_copy_are_given_back_when_the_read_ends() {
    let (mut c, large_key, large, _, _) = cluster_with_keys();
    let cmds = c.client(&a(), 1, get(&large_key));
    let asked: Vec<Command> = sends(&cmds).into_iter().cloned().collect();
    assert_eq!(asked.len(), 2, "{cmds:?}");
    // Both replicas answer before the coordinator's own storage read returns.
    let mut answered = false;
    for send in &asked {
        let done = c.reply(&a(), send, Ok(PeerResponse::Object(Some(large.clone()))));
        answered |= is_get_answer(&done, 1);
    }
    assert!(answered, "R=2 met by the two replicas");
    assert!(c.engine(&a()).read_bytes_in_flight() > 0);
    c.run_storage(&a(), &storage_read(&cmds));
    // The read is over: nothing of it may stay charged.
    assert_eq!(c.engine(&a()).inflight(), 0);
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), 0);
}

#[test]
fn large_reads_that_overshoot_the_budget_leave_small_reads_their_reserve() {
    let (mut c, large_key, large, small_key, small) = cluster_with_keys();
    // Two large reads arriving together both ask every replica before either is sized
    // (nothing is held yet): once sized, their copies hold more than the whole budget.
    let first = c.client(&a(), 1, get(&large_key));
    let second = c.client(&a(), 2, get(&large_key));
    assert_eq!(sends(&first).len(), 2, "{first:?}");
    assert_eq!(sends(&second).len(), 2, "{second:?}");
    c.run_storage(&a(), &storage_read(&first));
    c.run_storage(&a(), &storage_read(&second));
    assert!(c.engine(&a()).read_bytes_in_flight() > BUDGET);

    // A small read is not refused for what the large ones hold: it draws on the
    // reserve, asks the replicas once sized and is answered.
    let third = c.client(&a(), 3, get(&small_key));
    assert!(sends(&third).is_empty(), "{third:?}");
    let asked = c.run_storage(&a(), &storage_read(&third));
    assert_eq!(sends(&asked).len(), 2, "refused or asked nobody: {asked:?}");
    let mut answered = false;
    for send in sends(&asked) {
        let done = c.reply(&a(), send, Ok(PeerResponse::Object(Some(small.clone()))));
        answered |= is_get_answer(&done, 3);
    }
    assert!(answered, "the small read was answered");

    // A large read may not draw on the reserve.
    let fourth = c.client(&a(), 4, get(&large_key));
    assert!(sends(&fourth).is_empty(), "{fourth:?}");
    let refused = c.run_storage(&a(), &storage_read(&fourth));
    assert_eq!(refused, vec![client_error(4, RequestError::Overloaded)]);

    // The large reads end: the budget and the reserve are whole again.
    for (cmds, id) in [(&first, 1), (&second, 2)] {
        let mut answered = false;
        for send in sends(cmds) {
            let done = c.reply(&a(), send, Ok(PeerResponse::Object(Some(large.clone()))));
            answered |= is_get_answer(&done, id);
        }
        assert!(answered, "read {id} was answered");
    }
    assert_eq!(c.engine(&a()).read_bytes_in_flight(), 0);
    assert_eq!(c.engine(&a()).inflight(), 0);
}

#[test]
fn the_reserve_for_small_reads_is_bounded_too() {
    let (mut c, large_key, _, small_key, small) = cluster_with_keys();
    let first = c.client(&a(), 1, get(&large_key));
    let second = c.client(&a(), 2, get(&large_key));
    c.run_storage(&a(), &storage_read(&first));
    c.run_storage(&a(), &storage_read(&second));
    let held = c.engine(&a()).read_bytes_in_flight();
    assert!(held > BUDGET);
    // Small reads whose replicas do not answer yet: each holds its three copies' worth
    // of the reserve until the reserve is spent, then one is refused.
    let charge = 3 * small.encoded_len();
    let fit = BUDGET / RESERVE_SHARE / charge;
    let mut admitted = 0;
    for id in 10..10 + fit as u64 + 1 {
        let cmds = c.client(&a(), id, get(&small_key));
        let sized = c.run_storage(&a(), &storage_read(&cmds));
        if sends(&sized).len() == 2 {
            admitted += 1;
        } else {
            assert_eq!(sized, vec![client_error(id, RequestError::Overloaded)]);
            break;
        }
    }
    assert_eq!(admitted, fit, "small reads admitted beside a full budget");
    assert_eq!(
        c.engine(&a()).read_bytes_in_flight(),
        held + fit * charge,
        "the reserve's reads are charged to the budget's gauge too"
    );
}
