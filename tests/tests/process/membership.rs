//! A living membership on real processes (issue 9): a fourth node written by
//! `shoal dev add` starts as a candidate, the operator stages its join, plans and
//! commits naming the plan (a commit of a plan restaged since is refused first); every
//! node moves to layout version 2, the newcomer pulls its partitions, and
//! reads with R = N then find every key written before the join; a client that only
//! reads learns version 2 from its answers. Restarted nodes come back at version 2 from
//! their own disk.

use std::time::Duration;

use shoal_client::ClientError;
use shoal_proto::wire::MemberRole;

use crate::harness::{wait_until, Cluster};

const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until node `i` reports layout version `want` (`shoal_layout_version`).
async fn wait_for_version(cluster: &Cluster, i: usize, want: u64) {
    wait_until(
        &format!("node {i} at layout version {want}"),
        CHANGE_TIMEOUT,
        || async move {
            let v = cluster
                .metric_sum(&[i], "shoal_layout_version", &[])
                .await?;
            if v == want as f64 {
                Ok(())
            } else {
                Err(format!("at {v}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_joins_receives_its_partitions_and_every_node_keeps_version_2() {
    let mut cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    // A second application that only reads and writes: it learns the new layout from
    // the layout version its answers carry.
    let app = cluster.client().await;
    let keys: Vec<String> = (0..200).map(|i| format!("before-join/{i}")).collect();
    for k in &keys {
        client.put(k, k.as_bytes().to_vec()).await.expect("put");
    }

    let n4 = cluster.add_candidate();
    let id = cluster.id(n4);
    wait_until("the candidate to say hello", CHANGE_TIMEOUT, || {
        let client = client.clone();
        let id = id.clone();
        async move {
            let status = client.cluster_status().await.map_err(|e| e.to_string())?;
            let role = status.members.iter().find(|m| m.id == id).map(|m| m.role);
            if role == Some(MemberRole::Candidate) {
                Ok(())
            } else {
                Err(format!("{id} is {role:?}"))
            }
        }
    })
    .await;

    client
        .stage_join(&id, None, 1)
        .await
        .expect("staging the join");
    let plan = client.plan().await.expect("a plan");
    assert_eq!((plan.version, plan.next_version), (1, 2), "{plan:?}");
    assert!(plan.moves > 0, "{plan:?}");
    // Another operator restages the join (another weight) on the same node before this
    // plan's commit: the commit naming the plan is refused, naming the plan staged now,
    // and nothing changes; the plan staged now commits.
    client.unstage().await.expect("unstaging");
    client
        .stage_join(&id, None, 2)
        .await
        .expect("restaging the join");
    match client.commit_plan(1, plan.id()).await {
        Err(ClientError::PlanChanged { planned, staged }) => {
            assert_eq!(planned, plan.id());
            assert_ne!(staged, plan.id());
        }
        other => panic!("a commit of a changed plan: {other:?}"),
    }
    assert_eq!(
        client.cluster_status().await.expect("status").version,
        1,
        "nothing was committed"
    );
    let plan = client.plan().await.expect("the plan staged now");
    assert_eq!(
        client.commit_plan(1, plan.id()).await.expect("the commit"),
        2
    );

    for i in 0..4 {
        wait_for_version(&cluster, i, 2).await;
    }
    assert_eq!(app.layout_version(), 1);
    app.get(&keys[0]).await.expect("a get");
    assert_eq!(
        app.layout_version(),
        2,
        "a get's answer carries the node's layout version; the client refreshes"
    );
    app.close().await;
    let status = client.cluster_status().await.expect("status");
    let joined = status
        .members
        .iter()
        .find(|m| m.id == id)
        .expect("n4 listed");
    assert!(joined.partitions > 0, "{status:?}");
    wait_until(
        "the newcomer to pull its partitions",
        CHANGE_TIMEOUT,
        || async {
            let done = cluster
                .metric_sum(&[n4], "shoal_transfers_done_total", &[])
                .await?;
            let pending = cluster
                .metric_sum(&[n4], "shoal_transfers_pending", &[])
                .await?;
            let running = cluster
                .metric_sum(&[n4], "shoal_transfers_running", &[])
                .await?;
            if done > 0.0 && pending == 0.0 && running == 0.0 {
                Ok(())
            } else {
                Err(format!("done {done}, pending {pending}, running {running}"))
            }
        },
    )
    .await;
    for k in &keys {
        let read = client
            .get_with(k)
            .r(3)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {k}: {e}"));
        assert_eq!(read.values, vec![k.as_bytes().to_vec()], "{k}");
    }
    client.close().await;

    // Each node reloads version 2 from its own store.
    for i in [n4, 0] {
        cluster.kill(i);
        cluster.start_again(i);
        wait_for_version(&cluster, i, 2).await;
    }
}
