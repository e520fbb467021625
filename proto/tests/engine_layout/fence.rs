//! The fence at start: a node restarted from its store on an old layout serves no client
//! data until a peer confirmed its layout (the W = 1 gap: its own copy would meet W for
//! a layout that removed it), while a member restarted among live peers, a whole cluster
//! restarted together and a single-node cluster serve again at once or within one round.

use shoal_proto::layout::MemberState;
use shoal_proto::wire::{
    ClientResponse, ClusterReply, ClusterRequest, LayoutStamp, PeerRequest, Request, Response,
    StageRequest,
};
use shoal_proto::{Command, RequestError, Sender};
use shoal_ring::NodeId;

use super::{ask, cluster};
use crate::engine_harness::*;

/// Submits a W = 1 put of `key` at `n` and pumps until it is answered: the answer.
fn put_w1(c: &mut Cluster, n: &NodeId, key: &[u8], value: &str) -> Response {
    let put = c.submit(n, put_w(key, value, 1));
    c.pump(None, 0.0, |c| c.answers.contains_key(&put));
    c.answers[&put].clone()
}

fn is_confirming_refusal(r: &Response) -> bool {
    matches!(
        r,
        Response::Client(ClientResponse::Error(RequestError::Unavailable {
            alive: 0,
            ..
        }))
    )
}

#[test]
fn a_removed_node_restarted_on_its_old_layout_acknowledges_no_w1_write() {
    let mut c = cluster(4, 31);
    let (a, d) = (id("a"), id("d"));
    let key = c.key_where(|prefs| prefs[0] == d);
    // d stops, its store kept; a, b, c remove it: version 2.
    c.stop(&d);
    let staged = ask(
        &mut c,
        &a,
        ClusterRequest::Stage(StageRequest::Remove { id: d.clone() }),
    );
    assert!(matches!(staged, Ok(ClusterReply::Staged(_))), "{staged:?}");
    let committed = ask(&mut c, &a, ClusterRequest::Commit { version: 1 });
    assert_eq!(committed, Ok(ClusterReply::Committed { version: 2 }));
    let live = [id("a"), id("b"), id("c")];
    c.pump(None, 0.0, |c| {
        live.iter().all(|n| c.engine(n).layout().version() == 2)
    });
    assert_eq!(
        c.engine(&a).layout().current().member(&d).map(|m| m.state),
        Some(MemberState::Removed)
    );

    // d comes back with its old data and version 1, in which it is a primary of `key`.
    c.restart(&d, 77);
    assert_eq!(c.engine(&d).layout().version(), 1);
    assert!(c.engine(&d).confirming_layout());
    let answer = put_w1(&mut c, &d, &key, "lost-with-the-removed-node");
    assert!(
        is_confirming_refusal(&answer),
        "the removed node answered a W = 1 put with {answer:?}"
    );
    // Confirming, it fetched version 2 from a peer: now it says it is fenced.
    c.pump(None, 0.0, |c| !c.engine(&d).confirming_layout());
    assert_eq!(c.engine(&d).layout().version(), 2);
    assert!(c.engine(&d).is_fenced());
    let again = put_w1(&mut c, &d, &key, "lost-with-the-removed-node");
    assert!(
        matches!(&again, Response::Client(ClientResponse::Error(RequestError::NotAllowed(why))) if why.contains("fenced")),
        "{again:?}"
    );
    assert_eq!(c.stored(&d, &key), None, "nothing was written on d");
}

#[test]
fn a_member_restarted_among_live_peers_serves_after_one_round_trip() {
    let mut c = cluster(3, 32);
    let b = id("b");
    let key = c.key_where(|prefs| prefs[0] == b);
    c.stop(&b);
    c.restart(&b, 78);
    let started = c.now;
    // Its first answer comes before any peer answered it: refused, retryable.
    let refused = c.submit(&b, put_w(&key, "too-early", 1));
    assert!(
        is_confirming_refusal(&c.answers[&refused]),
        "{:?}",
        c.answers[&refused]
    );
    // Its own fetch at start is answered by a peer at its version: confirmed, long
    // before any periodic timer (an hour apart here) fires.
    c.pump(None, 0.0, |c| !c.engine(&b).confirming_layout());
    assert!(
        c.now.saturating_since(started) < PERIOD / 2,
        "confirmed after {:?}",
        c.now.saturating_since(started)
    );
    let answer = put_w1(&mut c, &b, &key, "after");
    assert!(
        matches!(answer, Response::Client(ClientResponse::Put(_))),
        "{answer:?}"
    );
}

#[test]
fn a_peer_stamp_at_the_same_version_confirms_the_layout() {
    let mut c = cluster(3, 33);
    let (a, b) = (id("a"), id("b"));
    c.stop(&b);
    c.restart(&b, 79);
    // The fetches it sent at start are not answered here; a's ping is.
    let stamp: LayoutStamp = c.engine(&a).stamp();
    let cmds = c.request(
        &b,
        900,
        Sender::Node(a.clone()),
        Request::Stamped(stamp, PeerRequest::Ping),
    );
    assert!(
        cmds.iter()
            .any(|cmd| matches!(cmd, Command::Respond { .. })),
        "{cmds:?}"
    );
    assert!(!c.engine(&b).confirming_layout());
}

#[test]
fn a_whole_cluster_restarted_together_confirms_without_deadlock() {
    let mut c = cluster(3, 34);
    let ids = [id("a"), id("b"), id("c")];
    for n in &ids {
        c.stop(n);
    }
    // Started one after another: the first finds no peer up at first.
    for (i, n) in ids.iter().enumerate() {
        c.restart(n, 80 + i as u64);
        assert!(c.engine(n).confirming_layout());
    }
    c.pump(None, 0.0, |c| {
        ids.iter().all(|n| !c.engine(n).confirming_layout())
    });
    let key = c.key_where(|_| true);
    let answer = put_w1(&mut c, &ids[0], &key, "v");
    assert!(
        matches!(answer, Response::Client(ClientResponse::Put(_))),
        "{answer:?}"
    );
}

#[test]
fn a_single_node_cluster_restarted_serves_at_once() {
    let mut cfg = quiet_config();
    cfg.replication.n = 1;
    cfg.replication.r = 1;
    cfg.replication.w = 1;
    cfg.replication.pr = 0;
    cfg.replication.pw = 0;
    let mut c = Cluster::new(1, 16, cfg, 35);
    let a = id("a");
    c.stop(&a);
    c.restart(&a, 81);
    assert!(!c.engine(&a).confirming_layout());
    let answer = put_w1(&mut c, &a, b"k", "v");
    assert!(
        matches!(answer, Response::Client(ClientResponse::Put(_))),
        "{answer:?}"
    );
}

#[test]
fn a_node_told_to_skip_the_confirmation_serves_at_once() {
    let mut c = cluster(3, 36);
    let b = id("b");
    let key = c.key_where(|prefs| prefs[0] == b);
    c.stop(&b);
    c.restart(&b, 82);
    assert!(c.engine(&b).confirming_layout());
    // A node pinned to a wire version before layouts (its driver says so).
    c.node(&b).engine.skip_layout_confirmation();
    assert!(!c.engine(&b).confirming_layout());
    let put = c.submit(&b, put_w(&key, "pinned", 1));
    assert!(
        matches!(c.answers[&put], Response::Client(ClientResponse::Put(_))),
        "{:?}",
        c.answers[&put]
    );
}
