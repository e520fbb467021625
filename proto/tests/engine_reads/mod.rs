//! Reads ask R replicas, not all N: the coordinator's own store and the next R - 1
//! primaries. A replica that is slow past `replication.read_speculative_after` gets a
//! speculative companion, a failed one is replaced by a replica not asked yet, replies
//! that disagree make the read ask the rest so that read repair reaches them, and
//! `replication.read_repair_chance_percent` of reads ask every replica from the start.

use std::time::Duration;

use super::engine_harness::*;
use super::{a, client_answer, five, key_on_a, unreachable};
use shoal_proto::wire::{ClientResponse, GetReply, PeerRequest, PeerResponse};
use shoal_proto::{Command, EngineConfig, Object, StorageOp};
use shoal_ring::{NodeId, PartitionId};

/// The peer read of `key` sent to `to`.
fn read_of(c: &Cluster, key: &[u8], to: &NodeId) -> Command {
    let part: PartitionId = c.partition(key);
    send(
        to,
        PeerRequest::Read {
            partition: part,
            key: key.to_vec(),
            hint_for: None,
        },
        c.cfg.replication.rpc_timeout,
    )
}

/// Five nodes whose reads ask every replica at once `percent`% of the time.
fn with_read_repair_chance(percent: u8) -> Cluster {
    let mut cfg: EngineConfig = quiet_config();
    cfg.replication.read_repair_chance_percent = percent;
    Cluster::new(5, 16, cfg, 7)
}

fn found(o: &Object) -> ClientResponse {
    ClientResponse::Get(GetReply {
        found: true,
        values: o.values().map(<[u8]>::to_vec).collect(),
        context: o.context(),
        written_at: o.value_times().collect(),
    })
}

#[test]
fn a_get_asks_its_own_store_and_r_minus_one_other_primaries() {
    let mut c = five();
    let (key, x) = key_on_a(&mut c);
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(
        without_ids(&cmds),
        vec![
            storage(StorageOp::Read {
                partition: part,
                key: key.clone()
            }),
            read_of(&c, &key, &prefs[1]),
        ],
        "N = 3, R = 2: the local store and one other primary, the third is not asked"
    );
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(Some(x.clone()))));
    assert_eq!(answer, vec![client_answer(1, found(&x))]);
    assert_eq!(c.engine(&a()).inflight(), 0, "nothing left to wait for");
}

#[test]
fn a_replica_slower_than_the_speculative_delay_gets_one_more_asked() {
    let mut c = five();
    let (key, x) = key_on_a(&mut c);
    let prefs = c.prefs(&key);
    let after = c.cfg.replication.read_speculative_after;
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let start = c.now;
    assert_eq!(
        c.timeout(&a(), start + after - Duration::from_micros(1)),
        vec![]
    );
    let speculative = c.timeout(&a(), start + after);
    assert_eq!(
        without_ids(&speculative),
        vec![read_of(&c, &key, &prefs[2])]
    );
    // The speculative reply answers; the slow one still feeds read repair.
    let answer = c.reply(
        &a(),
        &speculative[0],
        Ok(PeerResponse::Object(Some(x.clone()))),
    );
    assert_eq!(answer, vec![client_answer(1, found(&x))]);
    let repair = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(None)));
    assert_eq!(
        without_ids(&repair),
        vec![send(
            &prefs[1],
            replicate(c.partition(&key), &key, &x, None),
            c.cfg.replication.rpc_timeout
        )]
    );
}

#[test]
fn a_failed_replica_is_replaced_by_a_primary_not_asked_yet() {
    let mut c = five();
    let (key, x) = key_on_a(&mut c);
    let prefs = c.prefs(&key);
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let next = c.reply(&a(), &cmds[1], unreachable());
    assert_eq!(without_ids(&next), vec![read_of(&c, &key, &prefs[2])]);
    let answer = c.reply(&a(), &next[0], Ok(PeerResponse::Object(Some(x.clone()))));
    assert_eq!(answer, vec![client_answer(1, found(&x))]);
}

#[test]
fn replies_that_disagree_ask_the_rest_and_repair_every_replica_behind() {
    let mut c = five();
    let (key, x) = key_on_a(&mut c);
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let rpc = c.cfg.replication.rpc_timeout;
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    // The second primary has nothing: the client gets x, and the third is asked.
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(None)));
    assert_eq!(
        without_ids(&answer),
        vec![client_answer(1, found(&x)), read_of(&c, &key, &prefs[2])]
    );
    // It has nothing either: both are repaired.
    let repair = c.reply(&a(), &answer[1], Ok(PeerResponse::Object(None)));
    assert_eq!(
        without_ids(&repair),
        vec![
            send(&prefs[1], replicate(part, &key, &x, None), rpc),
            send(&prefs[2], replicate(part, &key, &x, None), rpc),
        ]
    );
}

#[test]
fn replies_that_agree_leave_the_rest_unasked() {
    let mut c = five();
    let (key, x) = key_on_a(&mut c);
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(Some(x.clone()))));
    assert_eq!(answer, vec![client_answer(1, found(&x))]);
    let later = c.now + Duration::from_secs(1);
    assert_eq!(
        c.timeout(&a(), later),
        vec![],
        "no speculation once answered"
    );
}

#[test]
fn a_read_repair_chance_of_100_percent_asks_every_replica() {
    let mut c = with_read_repair_chance(100);
    let (key, _) = key_on_a(&mut c);
    let prefs = c.prefs(&key);
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(
        without_ids(&cmds[1..]),
        vec![read_of(&c, &key, &prefs[1]), read_of(&c, &key, &prefs[2])]
    );
}

#[test]
fn a_read_repair_chance_samples_about_that_share_of_reads() {
    let mut c = with_read_repair_chance(25);
    let (key, x) = key_on_a(&mut c);
    let reads = 400;
    let mut all = 0;
    for i in 0..reads {
        let cmds = c.client(&a(), 1000 + i, get(&key));
        let sends: Vec<&Command> = cmds
            .iter()
            .filter(|c| matches!(c, Command::Send { .. }))
            .collect();
        assert!(sends.len() == 1 || sends.len() == 2, "{cmds:?}");
        all += usize::from(sends.len() == 2);
        // Each read ends (answered, every reply in) before the next.
        c.run_storage(&a(), &cmds[0]);
        for s in sends {
            c.reply(&a(), s, Ok(PeerResponse::Object(Some(x.clone()))));
        }
        assert_eq!(c.engine(&a()).inflight(), 0);
    }
    // 25% of 400 is 100; a seeded binomial stays well within 60..140.
    assert!((60..140).contains(&all), "{all} of {reads} reads asked all");
}
