//! Two operators commit at once while the cluster is partitioned: operator A at n1, on
//! the majority side {n1, n2} (with the candidate n4), operator B at n3, cut off from
//! every other node. A's commit is decided; B's can reach no majority of the layout's
//! members and is refused (or its client gives up), never decided: after the heal n3
//! learns A's layout for version 2 and every node ends on it. The partition is made with
//! `iptables` drops on the loopback interface between the nodes' QUIC ports (each node
//! sends and receives on its one UDP socket), so clients still reach every node.
//!
//! Needs root (iptables); CI runs as root. Elsewhere it fails with a message saying so,
//! unless `SHOAL_SKIP_ROOT_TESTS=1` is set.

use std::time::Duration;

use shoal_proto::wire::{ClientRequest, ClientResponse, ClusterReply, ClusterRequest};
use shoal_proto::RequestError;

use super::{stage_join_at, stop_all};
use crate::harness::{wait_until, Cluster, LayoutProbe, CHANGE_TIMEOUT};
use crate::netns::root_or_skip;

/// The isolated node (n3) and the operator's nodes.
const ISOLATED: usize = 2;
const MAJORITY_OPERATOR: usize = 0;
/// How long an operator waits for its commit: the minority's proposer gives up after
/// its rounds (each about two probe timeouts).
const COMMIT_WAIT: Duration = Duration::from_secs(40);

/// `iptables` DROP rules on `lo` between UDP ports, removed when dropped (also when the
/// test panics), so that a failed run leaves no partition behind.
struct LoopbackCut {
    rules: Vec<Vec<String>>,
}

impl LoopbackCut {
    /// Drops every datagram between `port` and each of `others`, both ways.
    fn isolate(port: u16, others: &[u16]) -> LoopbackCut {
        let mut cut = LoopbackCut { rules: Vec::new() };
        for &other in others {
            for (from, to) in [(port, other), (other, port)] {
                let rule: Vec<String> = [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "udp",
                    "--sport",
                    &from.to_string(),
                    "--dport",
                    &to.to_string(),
                    "-j",
                    "DROP",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                iptables("-I", &rule).unwrap_or_else(|e| panic!("adding a drop rule: {e}"));
                cut.rules.push(rule);
            }
        }
        cut
    }
}

impl Drop for LoopbackCut {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            if let Err(e) = iptables("-D", &rule) {
                eprintln!("removing drop rule {rule:?}: {e}");
            }
        }
    }
}

fn iptables(action: &str, rule: &[String]) -> Result<(), String> {
    let out = std::process::Command::new("iptables")
        .arg("-w")
        .arg(action)
        .args(rule)
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {action} {rule:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_commit_across_a_partition_and_only_the_majority_side_decides() {
    if !root_or_skip() {
        return;
    }
    let mut cluster = Cluster::start(3, "").await;
    let probe = LayoutProbe::new(&cluster);
    let joiner = cluster.add_candidate();
    let id = cluster.id(joiner);
    // A stages the join with weight 1 at n1, B with weight 2 at n3: two different layouts
    // for version 2. Both nodes know the candidate before the partition.
    for (node, weight) in [(MAJORITY_OPERATOR, 1), (ISOLATED, 2)] {
        stage_join_at(&probe, &cluster, node, &id, weight).await;
    }

    let port = |i: usize| cluster.nodes()[i].addr.port();
    let others: Vec<u16> = [0, 1, joiner]
        .into_iter()
        .filter(|&i| i != ISOLATED)
        .map(port)
        .collect();
    let cut = LoopbackCut::isolate(port(ISOLATED), &others);
    let (p, c) = (&probe, &cluster);
    let commit = move |node| {
        p.client(
            c,
            node,
            ClientRequest::Cluster(ClusterRequest::Commit { version: 1 }),
            COMMIT_WAIT,
        )
    };
    let (a, b) = tokio::join!(commit(MAJORITY_OPERATOR), commit(ISOLATED));
    eprintln!("commits of version 1 across the partition: n1 {a:?}, n3 {b:?}");
    assert!(
        matches!(
            a,
            Ok(ClientResponse::Cluster(ClusterReply::Committed {
                version: 2
            }))
        ),
        "the majority side's commit must be decided: {a:?}"
    );
    match &b {
        Ok(ClientResponse::Error(RequestError::LayoutRefused(why))) => {
            assert!(
                why.contains("no majority") || why.contains("version 2"),
                "the isolated commit's refusal must say why: {why}"
            )
        }
        // The client gave up first: the node answers when its proposer gives up.
        Err(e) => eprintln!("the isolated operator's client gave up: {e}"),
        other => panic!("the isolated node's commit must not be decided: {other:?}"),
    }
    // n3 still has only version 1 while cut off: nothing was decided on its side.
    let isolated = probe
        .status(&cluster, ISOLATED)
        .await
        .expect("status of n3");
    assert_eq!(isolated.version, 1, "n3 decided alone: {isolated:?}");
    drop(cut);

    // After the heal every node, the joiner included, ends on A's layout (weight 1).
    let all = [0, 1, 2, joiner];
    probe.wait_settled(&cluster, &all, 2).await;
    for i in all {
        wait_until(
            &format!("node {i} to show the majority side's layout"),
            CHANGE_TIMEOUT,
            || async {
                let s = probe.status(&cluster, i).await?;
                match s.members.iter().find(|m| m.id == id) {
                    Some(m) if m.weight == 1 && m.partitions > 0 => Ok(()),
                    other => Err(format!("the joiner at node {i}: {other:?}")),
                }
            },
        )
        .await;
    }
    stop_all(&mut cluster);
}
