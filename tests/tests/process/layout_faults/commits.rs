//! Two operators commit at once, at different nodes, each its own staged change on the
//! same version: exactly one commit succeeds, the other is refused naming the version the
//! cluster is at now, and every node ends on the one layout that won.

use shoal_proto::wire::{ClientResponse, ClusterReply, ClusterRequest, MemberRole};
use shoal_proto::RequestError;

use super::{stage_join_at, stop_all};
use crate::harness::{wait_until, Cluster, LayoutProbe, CHANGE_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_commit_the_same_version_at_two_nodes_and_exactly_one_wins() {
    let mut cluster = Cluster::start(3, "").await;
    let probe = LayoutProbe::new(&cluster);
    let joiner = cluster.add_candidate();
    let id = cluster.id(joiner);
    // Operator A at n1 joins the candidate with weight 1, operator B at n2 with weight 2:
    // two different layouts for version 2.
    for (node, weight) in [(0, 1), (1, 2)] {
        stage_join_at(&probe, &cluster, node, &id, weight).await;
    }
    let (p, c) = (&probe, &cluster);
    let commit = move |node| p.cluster(c, node, ClusterRequest::Commit { version: 1 });
    let (a, b) = tokio::join!(commit(0), commit(1));
    eprintln!("two commits of version 1: n1 answered {a:?}, n2 answered {b:?}");
    let won = |r: &Result<ClientResponse, String>| {
        matches!(
            r,
            Ok(ClientResponse::Cluster(ClusterReply::Committed {
                version: 2
            }))
        )
    };
    let refused = |r: &Result<ClientResponse, String>| match r {
        Ok(ClientResponse::Error(RequestError::LayoutRefused(why))) => why.contains("version 2"),
        _ => false,
    };
    let winner_weight = match (won(&a), won(&b)) {
        (true, false) => {
            assert!(
                refused(&b),
                "the losing commit (n2) must name version 2: {b:?}"
            );
            1
        }
        (false, true) => {
            assert!(
                refused(&a),
                "the losing commit (n1) must name version 2: {a:?}"
            );
            2
        }
        _ => panic!("exactly one commit must win: n1 {a:?}, n2 {b:?}"),
    };

    // Every node, the joiner included, ends on the winner's layout.
    let all = [0, 1, 2, joiner];
    probe.wait_settled(&cluster, &all, 2).await;
    let view = |s: &shoal_proto::wire::ClusterStatus| -> Vec<String> {
        s.members
            .iter()
            .filter(|m| m.role != MemberRole::Candidate)
            .map(|m| format!("{} {:?} w{} p{}", m.id, m.role, m.weight, m.partitions))
            .collect()
    };
    let first = probe.status(&cluster, 0).await.expect("status of n1");
    let joined = first
        .members
        .iter()
        .find(|m| m.id == id)
        .expect("the joiner listed");
    assert_eq!(joined.weight, winner_weight, "{first:?}");
    for i in all {
        wait_until(
            &format!("node {i} to show the winning layout"),
            CHANGE_TIMEOUT,
            || async {
                let s = probe.status(&cluster, i).await?;
                if view(&s) == view(&first) {
                    Ok(())
                } else {
                    Err(format!("{:?} vs {:?}", view(&s), view(&first)))
                }
            },
        )
        .await;
    }
    let lost = cluster
        .metric_sum(&[0, 1], "shoal_layout_commits_total", &[("result", "lost")])
        .await
        .expect("metrics")
        + cluster
            .metric_sum(
                &[0, 1],
                "shoal_layout_commits_total",
                &[("result", "refused")],
            )
            .await
            .expect("metrics");
    assert_eq!(lost, 1.0, "one commit counted as lost or refused");
    stop_all(&mut cluster);
}
