//! Layout agreement in the engine (issue 9): staging refusals, a join committed through
//! Paxos and pushed to every member and the candidate, and two proposers committing the
//! same version at once (exactly one layout per version; the loser is told the new
//! version), also with messages lost and reordered.

use std::net::SocketAddr;

use shoal_executor::Executor;
use shoal_proto::layout::{Change, Layout, MemberState};
use shoal_proto::wire::{
    ClientRequest, ClientResponse, ClusterReply, ClusterRequest, LayoutStamp, PeerRequest,
    PeerResponse, ReplicaReply, Request, Response, StageRequest,
};
use shoal_proto::{Command, Engine, InboundId, Now, RequestError, Sender, StorageOp};
use shoal_ring::NodeId;
use shoal_storage::MemStorage;

use super::engine_harness::*;

mod fence;

fn addr_of(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i))
}

fn cluster(nodes: usize, seed: u64) -> Cluster {
    Cluster::new(nodes, 64, quiet_config(), seed)
}

/// Adds candidate `name` (bootstrap contact `a`) to the cluster.
fn add_candidate(c: &mut Cluster, name: &str, port: u16) -> NodeId {
    let me = id(name);
    let engine = Engine::candidate(
        quiet_config(),
        me.clone(),
        addr_of(port),
        64,
        vec![(id("a"), addr_of(0))],
        99,
        Now::from_virtual(c.now),
    )
    .expect("a candidate engine");
    let executor = Executor::open(MemStorage::new(), || 1000 + u64::from(port)).expect("executor");
    c.nodes.insert(me.clone(), TestNode { engine, executor });
    me
}

fn cluster_req(c: &mut Cluster, n: &NodeId, req: ClusterRequest) -> (NodeId, InboundId) {
    c.submit(n, ClientRequest::Cluster(req))
}

/// The answer to `key`, once pumped.
fn answer(c: &Cluster, key: &(NodeId, InboundId)) -> Option<Result<ClusterReply, RequestError>> {
    match c.answers.get(key)? {
        Response::Client(ClientResponse::Cluster(r)) => Some(Ok(r.clone())),
        Response::Client(ClientResponse::Error(e)) => Some(Err(e.clone())),
        other => panic!("not a cluster answer: {other:?}"),
    }
}

/// Submits `req` at `n`, pumps in order until answered.
fn ask(c: &mut Cluster, n: &NodeId, req: ClusterRequest) -> Result<ClusterReply, RequestError> {
    let key = cluster_req(c, n, req);
    c.pump(None, 0.0, |c| c.answers.contains_key(&key));
    answer(c, &key).expect("answered")
}

fn refused(r: Result<ClusterReply, RequestError>) -> String {
    match r {
        Err(RequestError::LayoutRefused(why)) => why,
        other => panic!("expected a LayoutRefused, got {other:?}"),
    }
}

#[test]
fn staging_refuses_what_the_issue_lists() {
    let mut c = cluster(3, 1);
    let a = id("a");
    // Leaving or removing below N members.
    let why = refused(ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Leave { id: id("b") }),
    ));
    assert!(why.contains("fewer than n = 3"), "{why}");
    let why = refused(ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Remove { id: id("c") }),
    ));
    assert!(why.contains("fewer than n = 3"), "{why}");
    // Joining an existing member.
    let why = refused(ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Join {
            id: id("b"),
            zone: None,
            weight: 1,
        }),
    ));
    assert!(why.contains("already a member"), "{why}");
    // Joining a node that never said hello: its address is unknown.
    let why = refused(ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Join {
            id: id("z"),
            zone: None,
            weight: 1,
        }),
    ));
    assert!(why.contains("has not contacted the cluster"), "{why}");
    // Committing with nothing staged, and planning nothing.
    let why = refused(ask(&mut c, &a, ClusterRequest::Commit { version: 1 }));
    assert!(why.contains("nothing is staged"), "{why}");
    let why = refused(ask(&mut c, &a, ClusterRequest::Plan));
    assert!(why.contains("nothing is staged"), "{why}");
    // Replacing a live node.
    let d = add_candidate(&mut c, "d", 3);
    c.pump(None, 0.0, |c| c.engine(&d).layout().version() == 1);
    let why = refused(ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Replace {
            old: id("b"),
            new: d.clone(),
        }),
    ));
    assert!(why.contains("is up"), "{why}");
    // A commit naming another version than the current one names the current one.
    let staged = ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Join {
            id: d.clone(),
            zone: None,
            weight: 1,
        }),
    );
    assert!(
        matches!(staged, Ok(ClusterReply::Staged(ref s)) if s.len() == 1),
        "{staged:?}"
    );
    let why = refused(ask(&mut c, &a, ClusterRequest::Commit { version: 7 }));
    assert!(why.contains("at version 1, not 7"), "{why}");
    // Staged changes stay on the node that took them.
    assert_eq!(c.engine(&a).layout().version(), 1);
    let Ok(ClusterReply::Status(s)) = ask(&mut c, &id("b"), ClusterRequest::Status) else {
        panic!("status")
    };
    assert!(s.staged.is_empty());
    let Ok(ClusterReply::Staged(_)) = ask(&mut c, &a, ClusterRequest::Unstage) else {
        panic!("unstage")
    };
    let why = refused(ask(&mut c, &a, ClusterRequest::Commit { version: 1 }));
    assert!(why.contains("nothing is staged"), "{why}");
}

#[test]
fn a_committed_join_reaches_every_member_and_the_candidate() {
    let mut c = cluster(3, 2);
    let a = id("a");
    let d = add_candidate(&mut c, "d", 3);
    assert!(c.engine(&d).is_candidate());
    c.pump(None, 0.0, |c| c.engine(&d).layout().version() == 1);
    // The member that heard the hello lists the candidate.
    let Ok(ClusterReply::Status(s)) = ask(&mut c, &a, ClusterRequest::Status) else {
        panic!("status")
    };
    assert!(
        s.members
            .iter()
            .any(|m| m.id == d && m.role == shoal_proto::wire::MemberRole::Candidate),
        "{s:?}"
    );
    ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Join {
            id: d.clone(),
            zone: None,
            weight: 1,
        }),
    )
    .expect("staged");
    let Ok(ClusterReply::Plan(plan)) = ask(&mut c, &a, ClusterRequest::Plan) else {
        panic!("plan")
    };
    assert_eq!((plan.version, plan.next_version), (1, 2));
    assert!(plan.moves > 0);
    let committed = ask(&mut c, &a, ClusterRequest::Commit { version: 1 });
    assert_eq!(committed, Ok(ClusterReply::Committed { version: 2 }));
    c.pump(None, 0.0, |c| {
        c.nodes.values().all(|n| n.engine.layout().version() == 2)
    });
    let v2 = c.engine(&a).layout().get(2).cloned().expect("version 2");
    for (n, node) in &c.nodes {
        assert_eq!(node.engine.layout().get(2), Some(&v2), "{n}");
    }
    assert!(!c.engine(&d).is_candidate(), "the joined node is a member");
    assert!(v2.member(&d).is_some());
    // The history was saved on every node (the executor holds it).
    for (n, node) in &c.nodes {
        let Ok(shoal_proto::StorageReply::Layout(Some(saved))) =
            node.executor.execute(StorageOp::LoadLayout)
        else {
            panic!("{n} saved no layout")
        };
        assert_eq!(saved.history.version(), 2, "{n}");
    }
}

/// The race the simulator's seed 5181 found: operator 1 plans its leave on `a`, then
/// operator 0 unstages and restages its own change there before operator 1's commit
/// arrives. The commit naming operator 1's plan is refused, naming the plan staged now,
/// and nothing is committed; a commit naming the plan staged now goes through.
#[test]
fn a_commit_naming_its_plan_refuses_changes_restaged_since() {
    let mut c = cluster(5, 3);
    let a = id("a");
    let stage_leave = |n: &str| ClusterRequest::Stage(StageRequest::Leave { id: id(n) });
    ask(&mut c, &a, stage_leave("e")).expect("staged");
    let Ok(ClusterReply::Plan(first)) = ask(&mut c, &a, ClusterRequest::Plan) else {
        panic!("plan")
    };
    assert_eq!(first.changes, [Change::Leave { id: id("e") }]);
    // The other operator, on the same member.
    ask(&mut c, &a, ClusterRequest::Unstage).expect("unstaged");
    ask(&mut c, &a, stage_leave("d")).expect("staged");
    let commit_first = ClusterRequest::CommitPlan {
        version: first.version,
        plan: first.id(),
    };
    let outcome = ask(&mut c, &a, commit_first);
    assert!(
        matches!(outcome, Err(RequestError::PlanChanged { planned, .. }) if planned == first.id()),
        "{outcome:?}"
    );
    let Ok(ClusterReply::Plan(second)) = ask(&mut c, &a, ClusterRequest::Plan) else {
        panic!("plan")
    };
    assert_eq!(
        outcome,
        Err(RequestError::PlanChanged {
            planned: first.id(),
            staged: second.id(),
        })
    );
    assert_ne!(first.id(), second.id());
    let why = outcome.expect_err("refused").to_string();
    assert!(why.contains(&second.id().to_string()), "{why}");
    // Nothing was committed; the other operator's change is still staged.
    assert!(c.nodes.values().all(|n| n.engine.layout().version() == 1));
    let Ok(ClusterReply::Status(s)) = ask(&mut c, &a, ClusterRequest::Status) else {
        panic!("status")
    };
    assert_eq!(s.staged, [Change::Leave { id: id("d") }]);
    // A commit naming a plan on another version is refused as a plain commit is.
    let why = refused(ask(
        &mut c,
        &a,
        ClusterRequest::CommitPlan {
            version: 7,
            plan: second.id(),
        },
    ));
    assert!(why.contains("at version 1, not 7"), "{why}");
    // With nothing staged, a commit naming a plan is refused as a plain commit is.
    ask(&mut c, &id("b"), stage_leave("e")).expect("staged on b");
    let Ok(ClusterReply::Plan(on_b)) = ask(&mut c, &id("b"), ClusterRequest::Plan) else {
        panic!("plan")
    };
    ask(&mut c, &id("b"), ClusterRequest::Unstage).expect("unstaged");
    let why = refused(ask(
        &mut c,
        &id("b"),
        ClusterRequest::CommitPlan {
            version: 1,
            plan: on_b.id(),
        },
    ));
    assert!(why.contains("nothing is staged"), "{why}");
    // The plan staged now commits.
    let committed = ask(
        &mut c,
        &a,
        ClusterRequest::CommitPlan {
            version: second.version,
            plan: second.id(),
        },
    );
    assert_eq!(committed, Ok(ClusterReply::Committed { version: 2 }));
    let v2 = c.engine(&a).layout().get(2).cloned().expect("version 2");
    assert_eq!(
        v2.member(&id("d")).map(|m| m.state),
        Some(MemberState::Leaving)
    );
    assert_eq!(
        v2.member(&id("e")).map(|m| m.state),
        Some(MemberState::Active)
    );
}

/// Two operators commit different changes for version 2 on different nodes at once;
/// messages are delivered in a random order and some are lost. Exactly one layout is
/// decided for version 2 (every node that has one has the same), at most one commit
/// succeeds, and a loser is told the version the cluster is at now.
#[test]
fn two_proposers_of_one_version_decide_one_layout() {
    let mut outcomes = (0, 0, 0);
    for seed in 0..40u64 {
        let mut c = cluster(5, seed);
        let (a, b) = (id("a"), id("b"));
        ask(
            &mut c,
            &a,
            ClusterRequest::Stage(StageRequest::Leave { id: id("e") }),
        )
        .expect("staged");
        ask(
            &mut c,
            &b,
            ClusterRequest::Stage(StageRequest::Leave { id: id("d") }),
        )
        .expect("staged");
        let ka = cluster_req(&mut c, &a, ClusterRequest::Commit { version: 1 });
        let kb = cluster_req(&mut c, &b, ClusterRequest::Commit { version: 1 });
        let loss = if seed % 2 == 0 { 0.0 } else { 0.2 };
        let mut r = rng(seed);
        c.pump(Some(&mut r), loss, |c| {
            c.answers.contains_key(&ka) && c.answers.contains_key(&kb)
        });
        let answers = [
            answer(&c, &ka).expect("a answered"),
            answer(&c, &kb).expect("b answered"),
        ];
        let won = answers
            .iter()
            .filter(|x| matches!(x, Ok(ClusterReply::Committed { version: 2 })))
            .count();
        assert!(
            won <= 1,
            "seed {seed}: two commits of version 2 won: {answers:?}"
        );
        for x in &answers {
            match x {
                Ok(ClusterReply::Committed { version: 2 }) => outcomes.0 += 1,
                Err(RequestError::LayoutRefused(why)) if why.contains("now at version 2") => {
                    outcomes.1 += 1
                }
                Err(RequestError::LayoutRefused(why)) if why.contains("no majority") => {
                    outcomes.2 += 1
                }
                other => panic!("seed {seed}: unexpected answer {other:?}"),
            }
        }
        let decided: Vec<&Layout> = c
            .nodes
            .values()
            .filter_map(|n| n.engine.layout().get(2))
            .collect();
        assert!(
            decided.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: nodes hold different layouts for version 2"
        );
        if won == 1 {
            assert!(
                !decided.is_empty(),
                "seed {seed}: a commit won but no node has it"
            );
        }
    }
    // Without loss every run decides; the loser learns the winner's version.
    assert!(outcomes.0 >= 20, "{outcomes:?}");
    assert!(outcomes.1 >= 20, "{outcomes:?}");
}

#[test]
fn stamps_refuse_another_cluster_and_stale_data_work() {
    let mut c = cluster(3, 3);
    let (a, b) = (id("a"), id("b"));
    let mine = c.engine(&a).stamp();
    // Another cluster (settings differ): refused, whatever the request.
    let mut other = mine.clone();
    other.settings.cluster_id = "shoal-elsewhere".into();
    let cmds = c.request(
        &a,
        1,
        Sender::Node(b.clone()),
        Request::Stamped(other, PeerRequest::Ping),
    );
    assert!(
        cmds.iter().any(|cmd| matches!(cmd, Command::Respond { response: Response::Peer(PeerResponse::Error(RequestError::ClusterMismatch(why))), .. } if why.contains("cluster id"))),
        "{cmds:?}"
    );
    // An older layout version doing data work: refused as stale, naming ours.
    let stale = LayoutStamp {
        settings: mine.settings.clone(),
        version: 0,
    };
    let cmds = c.request(
        &a,
        2,
        Sender::Node(b.clone()),
        Request::Stamped(stale.clone(), PeerRequest::Forward(get(b"k"))),
    );
    assert!(
        cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Respond {
                response: Response::Peer(PeerResponse::Error(RequestError::StaleLayout {
                    current: 1
                })),
                ..
            }
        )),
        "{cmds:?}"
    );
    // ... but gossip and pings are answered.
    let cmds = c.request(
        &a,
        3,
        Sender::Node(b.clone()),
        Request::Stamped(stale, PeerRequest::Ping),
    );
    assert!(
        cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Respond {
                response: Response::Peer(PeerResponse::Pong),
                ..
            }
        )),
        "{cmds:?}"
    );
    // A newer sender: the receiver fetches its history.
    let newer = LayoutStamp {
        settings: mine.settings.clone(),
        version: 5,
    };
    let cmds = c.request(
        &a,
        4,
        Sender::Node(b.clone()),
        Request::Stamped(newer, PeerRequest::Ping),
    );
    assert!(
        cmds.iter().any(|cmd| matches!(cmd, Command::Send { to, request: PeerRequest::LayoutFetch, .. } if *to == b)),
        "{cmds:?}"
    );
}

#[test]
fn a_hello_whose_id_differs_from_the_certificate_is_refused() {
    let mut c = cluster(3, 4);
    let a = id("a");
    let settings = c.engine(&a).stamp().settings;
    let cmds = c.request(
        &a,
        1,
        Sender::Node(id("mallory")),
        Request::Peer(PeerRequest::Hello(shoal_proto::wire::Hello {
            id: id("d"),
            addr: addr_of(9),
            settings,
        })),
    );
    assert!(
        cmds.iter().any(|cmd| matches!(cmd, Command::Respond { response: Response::Peer(PeerResponse::Error(RequestError::NotAllowed(why))), .. } if why.contains("certificate is for mallory"))),
        "{cmds:?}"
    );
    assert!(c.engine(&a).layout().version() == 1);
}

/// Saves finish out of order on the storage workers: an older state never overwrites a
/// newer one, and what is loaded is the newest saved.
#[test]
fn an_older_layout_save_never_overwrites_a_newer_one() {
    let mut c = cluster(3, 5);
    let a = id("a");
    let mut first = c.node(&a).engine.persisted_layout_state();
    let mut second = c.node(&a).engine.persisted_layout_state();
    assert!(second.seq > first.seq);
    second.round = 7;
    first.round = 3;
    let exec = &c.node(&a).executor;
    assert_eq!(
        exec.execute(StorageOp::SaveLayout(Box::new(second.clone()))),
        Ok(shoal_proto::StorageReply::LayoutSaved)
    );
    assert_eq!(
        exec.execute(StorageOp::SaveLayout(Box::new(first))),
        Ok(shoal_proto::StorageReply::LayoutSaved)
    );
    let Ok(shoal_proto::StorageReply::Layout(Some(loaded))) = exec.execute(StorageOp::LoadLayout)
    else {
        panic!("nothing loaded")
    };
    assert_eq!(*loaded, second);
    // The encoding round-trips and refuses what it does not know.
    let bytes = second.encode();
    assert_eq!(shoal_proto::PersistedLayout::decode(&bytes), Ok(second));
    assert!(shoal_proto::PersistedLayout::decode(&[9, 1, 2]).is_err());
    assert!(shoal_proto::PersistedLayout::decode(&[]).is_err());
}

/// An acceptor's promise leaves only after its state is saved: the first command is the
/// save, and the reply comes when the save completes; a repeated prepare of the same
/// ballot, already durable, is answered at once.
#[test]
fn an_acceptor_answers_only_after_its_promise_is_saved() {
    use shoal_proto::paxos::{Ballot, PaxosReply, PaxosRequest};
    let mut c = cluster(3, 6);
    let (a, b) = (id("a"), id("b"));
    let prepare = PaxosRequest::Prepare {
        slot: 2,
        ballot: Ballot {
            round: 1,
            proposer: a.clone(),
        },
    };
    let cmds = c.request(
        &b,
        1,
        Sender::Node(a.clone()),
        Request::Peer(PeerRequest::Paxos(Box::new(prepare.clone()))),
    );
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(
        matches!(&cmds[0], Command::Storage { op: StorageOp::SaveLayout(s), .. } if s.acceptors.contains_key(&2)),
        "the promise is saved first: {cmds:?}"
    );
    let after = c.run_storage(&b, &cmds[0]);
    assert!(
        after.iter().any(|cmd| matches!(cmd, Command::Respond { response: Response::Peer(PeerResponse::Paxos(r)), .. } if matches!(**r, PaxosReply::Promise { .. }))),
        "{after:?}"
    );
    let again = c.request(
        &b,
        2,
        Sender::Node(a.clone()),
        Request::Peer(PeerRequest::Paxos(Box::new(prepare))),
    );
    assert!(
        matches!(
            again.as_slice(),
            [Command::Respond {
                response: Response::Peer(PeerResponse::Paxos(_)),
                ..
            }]
        ),
        "{again:?}"
    );
}

/// The keys [`join_half_done`] writes.
fn join_keys() -> Vec<Vec<u8>> {
    (0..200u32)
        .map(|i| format!("key-{i}").into_bytes())
        .collect()
}

/// A 3-node cluster holding [`join_keys`], written at `a`, that node `d` joins: returned
/// once `d` has pulled at least one partition of version 2 and not all (one exchange
/// runs at a time). Also `a` and `d`.
fn join_half_done() -> (Cluster, NodeId, NodeId) {
    let mut cfg = quiet_config();
    // One exchange at a time, so that the join is observed half done.
    cfg.aae.max_concurrent_exchanges = 1;
    let (mut c, a, d) = start_join(cfg);
    c.pump_until(|c| {
        let t = c.engine(&d).transfer_stats();
        t.version == 2 && t.done >= 1
    });
    (c, a, d)
}

/// A 3-node cluster of nodes configured `cfg` holding [`join_keys`], written at `a`,
/// where the join of candidate `d` was just committed (not yet delivered). Also `a`
/// and `d`.
fn start_join(cfg: shoal_proto::EngineConfig) -> (Cluster, NodeId, NodeId) {
    let mut c = Cluster::new(3, 64, cfg, 5);
    let a = id("a");
    for key in join_keys() {
        let (n, inbound) = c.submit(&a, put(&key, "a value of some bytes", None));
        c.pump(None, 0.0, |c| c.answers.contains_key(&(n.clone(), inbound)));
    }
    let d = add_candidate(&mut c, "d", 3);
    c.pump(None, 0.0, |c| c.engine(&d).layout().version() == 1);
    let join = StageRequest::Join {
        id: d.clone(),
        zone: None,
        weight: 1,
    };
    ask(&mut c, &a, ClusterRequest::Stage(join)).expect("staged");
    // Not `ask`: it pumps until the network is quiet, when the join is long done.
    cluster_req(&mut c, &a, ClusterRequest::Commit { version: 1 });
    (c, a, d)
}

/// A join moves each key into the joiner once. The joiner pulls a partition from one
/// source at a time (the next sources then send only what differs), and the old owners'
/// anti-entropy leaves a partition alone while its new owner pulls it. (A 1M-key join
/// had the joiner receive 1.8 times its data. Here, before the fix: with its three
/// sources exchanged at once, 471 copies of 157 keys; with anti-entropy on, 192.)
#[test]
fn a_join_moves_each_key_into_the_joiner_once() {
    for aae in [false, true] {
        let (merged, held, counted) = join_copies(aae);
        assert!(held > 20, "d holds a share of the keys: {held}");
        assert_eq!(merged, held, "copies merged at d (anti-entropy on: {aae})");
        // And all of them counted as transfer: none arrived before d began to pull.
        assert_eq!(counted, held, "transfer keys (anti-entropy on: {aae})");
    }
}

/// Runs a join (with regular anti-entropy on every tick or off) to its end: the copies
/// of keys the joiner was given to merge (by its own exchanges or pushed), the keys it
/// holds, and the keys counted as transfer.
fn join_copies(aae: bool) -> (u64, u64, u64) {
    use shoal_proto::metrics::TRANSFER_KEYS_TOTAL;
    let rec = super::engine_lag::Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let mut cfg = quiet_config();
        cfg.aae.enabled = aae;
        cfg.aae.interval = PERIOD;
        let (mut c, _, d) = start_join(cfg);
        c.pump_until(|c| c.engine(&d).layout().syncs().get(&d).copied() >= Some(2));
        let held = join_keys()
            .iter()
            .filter(|k| c.stored(&d, k).is_some())
            .count();
        let merged: usize = c
            .log
            .iter()
            .filter(|(_, n, _)| *n == d)
            .map(|(_, _, cmd)| match cmd {
                Command::Storage {
                    op: StorageOp::MergeMany { objects, .. },
                    ..
                } => objects.len(),
                _ => 0,
            })
            .sum();
        (merged as u64, held as u64, rec.counter(TRANSFER_KEYS_TOTAL))
    })
}

/// `shoal cluster status` at a joining node reports its transfers while they run: the
/// partitions not started, running and done add up to what it pulls, the bytes received
/// grow, the bytes left are estimated; once the join is synced it reports none.
#[test]
fn status_reports_the_transfers_of_a_join_while_they_run() {
    let (mut c, _, d) = join_half_done();
    let key = cluster_req(&mut c, &d, ClusterRequest::Status);
    c.pump_until(|c| c.answers.contains_key(&key));
    let Some(Ok(ClusterReply::Status(s))) = answer(&c, &key) else {
        panic!("status")
    };
    // Every partition d replicates in version 2 is new to it (it held none in version 1).
    let pulled = c.engine(&d).held_partitions().len() as u64;
    let t = s.transfers;
    assert!(t.done >= 1, "{t:?}");
    assert!(t.pending + t.running > 0, "the join is half done: {t:?}");
    assert_eq!(t.pending + t.running + t.done, pulled, "{t:?}");
    assert!(t.bytes_done > 0, "{t:?}");
    assert!(t.bytes_left > 0, "{t:?}");
    c.pump(None, 0.0, |c| c.engine(&d).transfer_stats().version == 0);
    let Ok(ClusterReply::Status(s)) = ask(&mut c, &d, ClusterRequest::Status) else {
        panic!("status")
    };
    assert_eq!(s.transfers, shoal_proto::wire::TransferSummary::default());
}

/// An old owner's anti-entropy that pushes keys into a partition the joiner still pulls
/// counts as transfer at the joiner, like its own transfer exchanges: the keys and bytes
/// a join moved are the joiner's, whoever started the exchange. (A 1M-key join counted
/// 129,145 of the joiner's 750,000 keys: the old owners' exchanges had pushed the rest.)
#[test]
fn a_push_into_a_partition_being_pulled_counts_as_transfer() {
    use shoal_proto::metrics::{TRANSFER_BYTES_TOTAL, TRANSFER_KEYS_TOTAL};
    use shoal_proto::wire::{AaeRequest, AaeResponse};
    let rec = super::engine_lag::Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let (mut c, a, d) = join_half_done();
        let keys = join_keys();
        // A key that a holds, in a partition d still pulls and does not hold yet.
        let key = keys
            .iter()
            .find(|k| {
                c.engine(&d).pulling(c.partition(k))
                    && c.stored(&a, k).is_some()
                    && c.stored(&d, k).is_none()
            })
            .expect("a key of a partition not pulled yet")
            .clone();
        let object = c.stored(&a, &key).expect("stored at a");
        let size = (key.len() + object.data_bytes()) as u64;
        let (keys_before, bytes_before) = (
            rec.counter(TRANSFER_KEYS_TOTAL),
            rec.counter(TRANSFER_BYTES_TOTAL),
        );
        let push = AaeRequest::Push {
            partition: c.partition(&key),
            objects: vec![(key.clone(), object)],
        };
        let cmds = c.peer(&d, 900_001, &a, PeerRequest::Aae(push));
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        let answer = c.run_storage(&d, &cmds[0]);
        assert!(
            matches!(
                answer.as_slice(),
                [Command::Respond {
                    response: Response::Peer(PeerResponse::Aae(AaeResponse::Pushed(1))),
                    ..
                }]
            ),
            "{answer:?}"
        );
        assert_eq!(rec.counter(TRANSFER_KEYS_TOTAL) - keys_before, 1);
        assert_eq!(rec.counter(TRANSFER_BYTES_TOTAL) - bytes_before, size);
        // A push into a partition d does not pull (it holds it in full) is anti-entropy,
        // not transfer.
        let held = keys
            .iter()
            .find(|k| {
                let p = c.partition(k);
                c.engine(&d).held_partitions().contains(&p) && !c.engine(&d).pulling(p)
            })
            .map(|k| c.partition(k))
            .expect("a partition d pulled in full");
        let (keys_before, bytes_before) = (
            rec.counter(TRANSFER_KEYS_TOTAL),
            rec.counter(TRANSFER_BYTES_TOTAL),
        );
        let key = keys
            .iter()
            .find(|k| c.partition(k) == held)
            .expect("a key of it")
            .clone();
        let object = c.stored(&a, &key).expect("stored at a");
        let push = AaeRequest::Push {
            partition: held,
            objects: vec![(key, object)],
        };
        let cmds = c.peer(&d, 900_002, &a, PeerRequest::Aae(push));
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        let _ = c.run_storage(&d, &cmds[0]);
        assert_eq!(rec.counter(TRANSFER_KEYS_TOTAL), keys_before);
        assert_eq!(rec.counter(TRANSFER_BYTES_TOTAL), bytes_before);
    });
}

/// A node that gains a partition in a new layout version still reads it from the old
/// replica set until every new owner synced; a coordinator that already reads from the
/// new set forwards a request to it. It coordinates that request (it holds the partition
/// in a kept version) instead of refusing it as "not a replica" (a real-process join
/// failed R = 3 reads this way).
#[test]
fn a_forwarded_request_at_a_node_gaining_the_partition_is_coordinated() {
    let mut c = cluster(4, 9);
    let (a, b, d) = (id("a"), id("b"), id("d"));
    let v2 = c
        .engine(&a)
        .layout()
        .current()
        .plan(&[shoal_proto::layout::Change::Leave { id: d.clone() }])
        .expect("a plan")
        .next;
    let n = 3;
    let key = (0..10_000u32)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| {
            let p = c.partition(k);
            let old = c.engine(&a).layout().current().ring().preference_list(p, n);
            let new = v2.ring().preference_list(p, n);
            !old.nodes.contains(&b) && new.nodes.contains(&b)
        })
        .expect("a partition b gains when d leaves");
    c.node(&b)
        .engine
        .install_layout_version(v2)
        .expect("version 2 installed");
    // b reads from version 1 still (d, the leaver, has not... nobody synced version 2).
    assert_eq!(c.engine(&b).layout().read_version().version(), 1);
    let cmds = c.peer(&b, 7, &a, PeerRequest::Forward(get(&key)));
    assert!(
        !cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Respond {
                response: Response::Client(ClientResponse::Error(_)),
                ..
            }
        )),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|cmd| matches!(cmd, Command::Storage { .. } | Command::Send { .. })),
        "b coordinates the read: {cmds:?}"
    );
}

/// A partition is dropped only after every write to it already handed to storage has
/// landed: storage may carry out operations in another order than issued (the node's
/// worker threads, the simulator's completion timing), so a merge issued before the
/// drop and carried out after it would leave data of a partition the node no longer
/// holds (found by the simulator's `not_dropped` check, through the agreement).
#[test]
fn a_partition_is_dropped_only_after_the_writes_in_flight_to_it_landed() {
    use shoal_proto::layout::{Change, Tracker};
    use shoal_proto::{Object, SiblingValue, Time};
    let mut c = cluster(4, 7);
    let (a, b) = (id("a"), id("b"));
    let key = c.key_where(|p| p.contains(&a));
    let p = c.partition(&key);
    let mut object = Object::new();
    object
        .update(
            &shoal_proto::CausalContext::default(),
            SiblingValue::Data(b"v".to_vec()),
            shoal_proto::Dot::new(shoal_proto::Actor(9), 1),
            Time::from_micros(1),
        )
        .expect("a first value");
    let cmds = c.peer(&a, 1, &b, replicate(p, &key, &object, None));
    let merge = cmds
        .iter()
        .find(|cmd| {
            matches!(
                cmd,
                Command::Storage {
                    op: StorageOp::Merge { .. },
                    ..
                }
            )
        })
        .cloned()
        .expect("the replica write goes to storage");
    // Node a leaves, and every member already reads from version 2: a holds nothing.
    let mut history = c.engine(&a).layout().clone();
    let v2 = history
        .current()
        .commit(&[Change::Leave { id: a.clone() }], 1)
        .expect("a may leave");
    history.push(v2).expect("version 2");
    for m in history.tracked() {
        for t in [Tracker::Ack, Tracker::Sync, Tracker::SyncAck] {
            history.advance(t, &m, 2);
        }
    }
    history.prune();
    let node = c.node(&a);
    node.engine.merge_layout(&history).expect("merged");
    let is_drop = |cmd: &Command| matches!(cmd, Command::Storage { op: StorageOp::DropPartition { partition }, .. } if *partition == p);
    let before = node.drain();
    assert!(
        !before.iter().any(is_drop),
        "dropped while a write to the partition is in flight: {before:?}"
    );
    let after = c.run_storage(&a, &merge);
    assert!(
        after.iter().any(is_drop),
        "the drop follows the write: {after:?}"
    );
}

/// A candidate holds no partition: it declines a client's write and read (nothing ran,
/// so the client sends either to another node), rather than answering `ShuttingDown`,
/// whose outcome a client cannot tell for a write.
#[test]
fn a_candidate_declines_client_reads_and_writes() {
    let mut c = cluster(3, 4);
    let d = add_candidate(&mut c, "d", 3);
    c.pump(None, 0.0, |c| c.engine(&d).layout().version() == 1);
    for req in [put(b"k", "v", None), get(b"k")] {
        let key = c.submit(&d, req);
        c.pump(None, 0.0, |c| c.answers.contains_key(&key));
        match c.answers.get(&key) {
            Some(Response::Client(ClientResponse::Error(RequestError::Declined(why)))) => {
                assert!(why.contains("candidate"), "{why}")
            }
            other => panic!("expected Declined, got {other:?}"),
        }
    }
}

/// The answer to a client's replica read of `key` at `n`, once pumped in order.
/// The node's replica-read gate (what its request handler answers from) is checked to
/// say the same, before the read.
fn replica_read(c: &mut Cluster, n: &NodeId, key: &[u8]) -> Result<ReplicaReply, RequestError> {
    let gate = c.engine(n).replica_read_gate().check(key);
    let req = ClientRequest::GetReplica { key: key.to_vec() };
    let asked = c.submit(n, req);
    c.pump_until(|c| c.answers.contains_key(&asked));
    let answer = match c.answers.get(&asked) {
        Some(Response::Client(ClientResponse::Replica(reply))) => Ok(reply.clone()),
        Some(Response::Client(ClientResponse::Error(e))) => Err(e.clone()),
        other => panic!("not an answer to a replica read: {other:?}"),
    };
    match (&gate, &answer) {
        (Ok((_, v)), Ok(reply)) => assert_eq!(*v, reply.layout_version, "gate and engine"),
        (Err(gate), Err(RequestError::Declined(why))) => assert_eq!(gate, why, "gate and engine"),
        (gate, answer) => panic!("the gate says {gate:?}, the engine {answer:?}"),
    }
    answer
}

fn declined(answer: Result<ReplicaReply, RequestError>) -> String {
    match answer {
        Err(RequestError::Declined(why)) => why,
        other => panic!("expected Declined, got {other:?}"),
    }
}

/// A client's replica read is answered, with the node's own copy and its layout
/// version, only by a primary of the key in a settled layout: a node that is not a
/// primary, a candidate, and a primary while a join is in progress decline it (the
/// client then reads through a coordinator); after the join, primaries answer again
/// under the new version.
#[test]
fn replica_reads_are_answered_only_by_primaries_of_a_settled_layout() {
    let (mut c, a, d) = start_join(quiet_config());
    let key = join_keys().remove(7);
    let primaries = |c: &Cluster, v: usize| {
        let layout = &c.engine(&a).layout().versions()[v];
        layout.ring().preference_list_for_key(&key, 3).nodes
    };
    // The candidate (not yet told of the commit) holds nothing.
    let why = declined(replica_read(&mut c, &d, &key));
    assert!(why.contains("candidate"), "{why}");
    // Half way through the join every node keeps two versions: none answers alone.
    c.pump_until(|c| {
        let t = c.engine(&d).transfer_stats();
        t.version == 2 && t.done >= 1
    });
    let first = primaries(&c, 0)[0].clone();
    let why = declined(replica_read(&mut c, &first, &key));
    assert!(why.contains("layout change is in progress"), "{why}");
    // The join done and the old version pruned everywhere.
    c.pump(None, 0.0, |c| {
        c.nodes
            .values()
            .all(|n| n.engine.layout().versions().len() == 1)
    });
    let now = primaries(&c, 0);
    for node in &now {
        let copy = replica_read(&mut c, node, &key).expect("a primary's copy");
        assert_eq!(copy.layout_version, 2);
        assert_eq!(copy.get.values, vec![b"a value of some bytes".to_vec()]);
        assert!(copy.get.found);
    }
    let other = ["a", "b", "c", "d"]
        .map(id)
        .into_iter()
        .find(|n| !now.contains(n))
        .expect("four members, three primaries");
    let why = declined(replica_read(&mut c, &other, &key));
    assert!(why.contains("not a primary"), "{why}");
    // A key nobody wrote, at one of its primaries: a copy that is not found.
    let ring = c.engine(&a).layout().current().ring().clone();
    let unwritten = (0..1000)
        .map(|i| format!("unwritten-{i}").into_bytes())
        .find(|k| ring.preference_list_for_key(k, 3).nodes.contains(&now[0]))
        .expect("a key of that node");
    let copy = replica_read(&mut c, &now[0], &unwritten).expect("a copy");
    assert!(!copy.get.found);
    assert!(copy.get.values.is_empty());
}

/// Whether `n`'s engine merges a peer's replica write into its copy with nothing else
/// done first: its one command is a `Merge` of that key.
fn engine_merges(
    c: &mut Cluster,
    n: &NodeId,
    inbound: u64,
    from: &NodeId,
    stamp: LayoutStamp,
    req: PeerRequest,
) -> bool {
    let PeerRequest::Replicate { key, .. } = &req else {
        panic!("not a replica write: {req:?}");
    };
    let key = key.clone();
    let cmds = c.request(
        n,
        inbound,
        Sender::Node(from.clone()),
        Request::Stamped(stamp, req),
    );
    matches!(&cmds[..], [Command::Storage { op: StorageOp::Merge { key: k, .. }, .. }] if *k == key)
}

/// The check a node's request handler merges peers' replica writes by
/// (`ReplicaReadGate::admits_merge`) admits one only where the engine would merge it
/// (its only command that merge): a primary of the key in a settled layout, the
/// sender a member stamping this node's own layout version and settings, the key of
/// the partition named, not a hint. Everything else goes to the engine: a node that is
/// not a primary, another stamp (older, newer, another cluster), a wrong partition, a
/// stranger, and every node while a join is in progress.
#[test]
fn the_gate_admits_a_replica_write_only_where_the_engine_merges_it() {
    let (mut c, a, d) = start_join(quiet_config());
    let key = join_keys().remove(3);
    let object = shoal_proto::Object::new();
    // Half way through the join: no node merges outside the engine.
    c.pump_until(|c| {
        let t = c.engine(&d).transfer_stats();
        t.version == 2 && t.done >= 1
    });
    for n in ["a", "b", "c", "d"].map(id) {
        let stamp = c.engine(&n).stamp();
        let partition = c.engine(&n).ring().partition_of(&key);
        let from = if n == a { id("b") } else { a.clone() };
        assert!(
            !c.engine(&n)
                .replica_read_gate()
                .admits_merge(&from, &stamp, partition, &key),
            "{n} merges in its handler during a join"
        );
    }
    c.pump(None, 0.0, |c| {
        c.nodes
            .values()
            .all(|n| n.engine.layout().versions().len() == 1)
    });
    let primaries = c.engine(&a).layout().versions()[0]
        .ring()
        .preference_list_for_key(&key, 3)
        .nodes;
    let other = ["a", "b", "c", "d"]
        .map(id)
        .into_iter()
        .find(|n| !primaries.contains(n))
        .expect("four members, three primaries");
    let partition = c.engine(&a).ring().partition_of(&key);
    let stamp = c.engine(&a).stamp();
    let (p, q) = (primaries[0].clone(), primaries[1].clone());
    let mut inbound = 100;
    let mut check =
        |c: &mut Cluster, n: &NodeId, from: &NodeId, stamp: LayoutStamp, req: PeerRequest| {
            inbound += 1;
            let PeerRequest::Replicate {
                partition,
                key,
                hint_for,
                ..
            } = &req
            else {
                unreachable!()
            };
            let admitted = hint_for.is_none()
                && c.engine(n)
                    .replica_read_gate()
                    .admits_merge(from, &stamp, *partition, key);
            let merged = engine_merges(c, n, inbound, from, stamp, req);
            assert!(
                !admitted || merged,
                "the gate admits what the engine does not merge"
            );
            admitted
        };
    // A primary, a member's stamp of this version: admitted, and the engine merges it.
    let ok = replicate(partition, &key, &object, None);
    assert!(check(&mut c, &p, &q, stamp.clone(), ok.clone()));
    // Not a primary: the engine (which refuses it as stale).
    assert!(!check(&mut c, &other, &q, stamp.clone(), ok.clone()));
    // Another layout version, older or newer, or another cluster's settings.
    for version in [stamp.version - 1, stamp.version + 1] {
        let s = LayoutStamp {
            version,
            ..stamp.clone()
        };
        assert!(!check(&mut c, &p, &q, s, ok.clone()));
    }
    let mut elsewhere = stamp.clone();
    elsewhere.settings.cluster_id = "shoal-elsewhere".into();
    assert!(!check(&mut c, &p, &q, elsewhere, ok.clone()));
    // A stranger, a hint, a key of another partition, an empty key.
    assert!(!check(
        &mut c,
        &p,
        &id("mallory"),
        stamp.clone(),
        ok.clone()
    ));
    let hint = replicate(partition, &key, &object, Some(&other));
    assert!(!check(&mut c, &p, &q, stamp.clone(), hint));
    let wrong = shoal_ring::PartitionId((partition.0 + 1) % 64);
    let misfiled = replicate(wrong, &key, &object, None);
    assert!(!check(&mut c, &p, &q, stamp.clone(), misfiled));
    let empty = replicate(partition, b"", &object, None);
    assert!(!check(&mut c, &p, &q, stamp, empty));
}
