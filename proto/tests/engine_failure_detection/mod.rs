//! The failure detector as the engine runs it: one failed probe or request does not
//! mark a peer down, a run of them after a silence does, an answer brings it back; a
//! paused peer is down within a few seconds with the default probing, and a peer that
//! loses one probe in three is never marked down.

use std::time::Duration;

use shoal_proto::wire::{PeerRequest, PeerResponse};
use shoal_proto::{Command, EngineConfig, MembershipConfig, SendError, Time};
use shoal_ring::NodeId;

use super::a;
use super::engine_harness::*;

/// The quiet settings with the default failure detector, probing every `probe_interval`.
fn detector_config(probe_interval: Duration, probe_timeout: Duration) -> EngineConfig {
    let mut cfg = quiet_config();
    cfg.membership = MembershipConfig {
        gossip_interval: cfg.membership.gossip_interval,
        probe_interval,
        probe_timeout,
        ..MembershipConfig::default()
    };
    cfg
}

#[test]
fn one_failed_probe_round_does_not_mark_a_peer_down_but_a_run_of_them_does() {
    let mut c = Cluster::new(5, 16, detector_config(PERIOD, PERIOD / 2), 7);
    let b = id("b");
    let threshold = MembershipConfig::default().failure_threshold;
    for round in 1..threshold {
        c.tick(&a(), std::slice::from_ref(&b));
        assert!(
            c.engine(&a()).membership().is_up(&b),
            "{round} failed probe rounds in a row"
        );
    }
    c.tick(&a(), std::slice::from_ref(&b));
    assert!(!c.engine(&a()).membership().is_up(&b));
    c.tick(&a(), &[]);
    assert!(
        c.engine(&a()).membership().is_up(&b),
        "one answer brings it back"
    );
    c.tick(&a(), std::slice::from_ref(&b));
    assert!(
        c.engine(&a()).membership().is_up(&b),
        "the count starts again"
    );
}

/// Drive `a`'s probes for `length` of virtual time: every peer answers at once, except
/// that probe number `i` to `peer` is answered only if `answers(i)` (otherwise it times
/// out). Returns when `a` first saw `peer` down, if it did.
fn probe_for(
    c: &mut Cluster,
    peer: &NodeId,
    length: Duration,
    mut answers: impl FnMut(usize) -> bool,
) -> Option<Time> {
    let end = c.now + length;
    let mut unanswered: Vec<(Time, Command)> = Vec::new();
    let mut probes = 0;
    while c.now < end {
        let timer = c
            .engine(&a())
            .poll_timeout()
            .expect("timers are armed")
            .as_virtual();
        let timeout = unanswered.iter().map(|(at, _)| *at).min();
        let cmds = match timeout {
            Some(at) if at <= timer => {
                let i = unanswered.iter().position(|(t, _)| *t == at).unwrap();
                let (_, cmd) = unanswered.remove(i);
                c.now = at;
                c.reply(&a(), &cmd, Err(SendError::Timeout))
            }
            _ => c.timeout(&a(), timer),
        };
        for cmd in cmds {
            match &cmd {
                Command::Send {
                    to,
                    request: PeerRequest::Ping,
                    timeout,
                    ..
                } if to == peer => {
                    probes += 1;
                    if answers(probes) {
                        assert_eq!(c.reply(&a(), &cmd, Ok(PeerResponse::Pong)), vec![]);
                    } else {
                        unanswered.push((c.now + *timeout, cmd.clone()));
                    }
                }
                Command::Send {
                    request: PeerRequest::Ping,
                    ..
                } => assert_eq!(c.reply(&a(), &cmd, Ok(PeerResponse::Pong)), vec![]),
                other => panic!("only probes are due: {other:?}"),
            }
        }
        if !c.engine(&a()).membership().is_up(peer) {
            return Some(c.now);
        }
    }
    None
}

#[test]
fn a_paused_peer_is_down_within_a_few_seconds_with_the_default_probing() {
    let d = MembershipConfig::default();
    let mut c = Cluster::new(5, 16, detector_config(d.probe_interval, d.probe_timeout), 7);
    let b = id("b");
    // `b` answered its last probe when the cluster started; it answers nothing now.
    let paused = c.now;
    let down = probe_for(&mut c, &b, Duration::from_secs(30), |_| false)
        .expect("a paused peer is marked down");
    let took = down.saturating_since(paused);
    assert!(
        took <= Duration::from_secs(5),
        "marked down {took:?} after it paused"
    );
    assert!(
        took >= d.down_after,
        "not before {:?} of silence",
        d.down_after
    );
}

#[test]
fn a_peer_that_loses_one_probe_in_three_is_never_marked_down() {
    let d = MembershipConfig::default();
    let mut c = Cluster::new(5, 16, detector_config(d.probe_interval, d.probe_timeout), 7);
    let b = id("b");
    let down = probe_for(&mut c, &b, Duration::from_secs(120), |i| i % 3 != 0);
    assert_eq!(down, None, "a lossy but live peer flapped");
}

#[test]
fn a_wall_clock_step_neither_fires_nor_stalls_a_request_deadline() {
    use shoal_proto::wire::{ClientResponse, Response};
    use shoal_proto::{Monotonic, Now, RequestError};

    let mut c = Cluster::new(5, 16, quiet_config(), 7);
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, put(&key, "v", None));
    let sends = c.run_storage(&a(), &cmds[0]);
    assert_eq!(sends.len(), 2, "replicates in flight: {sends:?}");
    let (wall, mono) = (c.now, Monotonic::from_duration(c.now.since_epoch()));
    let timeout = c.cfg.replication.request_timeout;
    let hour = Duration::from_secs(3600);
    let node = c.node(&a());
    // The wall clock jumps an hour ahead; monotonic time barely moves: nothing is due.
    node.engine
        .handle_timeout(Now::new(wall + hour, mono + Duration::from_millis(1)));
    assert_eq!(node.drain(), vec![], "a wall-clock step fired the deadline");
    // The wall clock steps back two hours while monotonic time passes the deadline.
    node.engine
        .handle_timeout(Now::new(wall - hour, mono + timeout));
    let answered = node.drain();
    assert!(
        matches!(
            answered.as_slice(),
            [Command::Respond {
                response: Response::Client(ClientResponse::Error(RequestError::Timeout { .. })),
                ..
            }]
        ),
        "the deadline fires on monotonic time: {answered:?}"
    );
}
