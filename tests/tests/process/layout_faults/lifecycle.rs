//! A cluster's life on real processes under write load: it grows from 3 to 5 nodes (two
//! candidates joined in one change), one node is decommissioned (5 → 4), and one is
//! killed for good and removed (4 → 3 active). After each change every remaining node
//! settles on the new version; at the end every acknowledged key reads back at R = N,
//! no node reports a transfer pending, and each owner's store holds every key. The
//! client requests that failed during each change are reported.

use shoal_client::NodeId;

use super::{more_acked, stop_all, wait_repaired};
use crate::harness::{
    assert_all_readable, assert_owners_store, key_values, put_all, wait_until, Cluster,
    LayoutProbe, Load, CHANGE_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_decommission_one_and_remove_a_dead_one_under_load() {
    let mut cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    let probe = LayoutProbe::new(&cluster);
    let before = key_values("life", 0..300);
    put_all(&client, &before, 2, 32).await;
    let load = Load::start(&client, "life-load", 8, 100_000);
    let mut report = Vec::new();

    // 3 → 5: two candidates, both joins staged, one commit.
    let (n4, n5) = (cluster.add_candidate(), cluster.add_candidate());
    for i in [n4, n5] {
        let id = cluster.id(i);
        probe.wait_candidate(&cluster, 0, &id).await;
        client
            .stage_join(&id, None, 1)
            .await
            .unwrap_or_else(|e| panic!("staging the join of {id}: {e}"));
    }
    let failed = load.failed();
    assert_eq!(client.commit(1).await.expect("commit of version 2"), 2);
    more_acked(&load, 40).await;
    probe.wait_settled(&cluster, &[0, 1, 2, n4, n5], 2).await;
    report.push(("3 -> 5", load.failed() - failed));
    assert_eq!(
        probe
            .status(&cluster, 0)
            .await
            .expect("status")
            .members
            .len(),
        5
    );

    // 5 → 4: n4 is decommissioned; it hands its partitions over.
    let failed = load.failed();
    client
        .stage_leave(&cluster.id(n4))
        .await
        .expect("staging the leave");
    assert_eq!(client.commit(2).await.expect("commit of version 3"), 3);
    more_acked(&load, 40).await;
    probe.wait_settled(&cluster, &[0, 1, 2, n5], 3).await;
    report.push(("5 -> 4 (leave)", load.failed() - failed));

    // 4 → 3: n5 dies for good (kill -9), then is removed; the survivors rebuild its
    // partitions from the other replicas.
    let dead = cluster.id(n5);
    let failed = load.failed();
    cluster.kill(n5);
    wait_until("n1 to see n5 down", CHANGE_TIMEOUT, || async {
        let s = probe.status(&cluster, 0).await?;
        match s.members.iter().find(|m| m.id == dead) {
            Some(m) if !m.up => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    client
        .stage_remove(&dead)
        .await
        .expect("staging the removal");
    assert_eq!(client.commit(3).await.expect("commit of version 4"), 4);
    more_acked(&load, 40).await;
    probe.wait_settled(&cluster, &[0, 1, 2], 4).await;
    report.push(("4 -> 3 (kill -9, remove)", load.failed() - failed));

    let (during, failed) = load.stop().await;
    eprintln!(
        "{} puts acknowledged during the changes; failed requests per change: {report:?}; \
         by kind: {failed:?}",
        during.len()
    );
    let all: Vec<(String, String)> = before.into_iter().chain(during).collect();
    wait_repaired(&mut cluster, &client, 3).await;
    for i in [0, 1, 2] {
        let s = probe.status(&cluster, i).await.expect("status");
        assert_eq!(
            (s.transfers.pending, s.transfers.running),
            (0, 0),
            "node {i} still has transfers: {:?}",
            s.transfers
        );
        let active: Vec<&NodeId> = s
            .members
            .iter()
            .filter(|m| m.partitions > 0)
            .map(|m| &m.id)
            .collect();
        assert_eq!(active.len(), 3, "node {i}: owners {active:?}");
    }
    assert_all_readable(&client, &all, 3, 32).await;
    client.close().await;
    stop_all(&mut cluster);
    let copies = assert_owners_store(&cluster, 3, &all);
    eprintln!("{copies} owner copies of {} keys checked", all.len());
}
