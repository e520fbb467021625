//! `durability = "sync"` on real nodes: with group commit (the default) every write is
//! acknowledged only after a WAL fsync that covers it, and one fsync acknowledges many
//! writes; with `group_commit = false` each write is synced on its own. Both serve every
//! write and read it back from every replica. (That the committer releases a completion
//! only after a sync covering its write is checked in `node/src/server/group_commit.rs`
//! against a store that tracks syncs.)

use crate::harness::Cluster;

const WRITERS: usize = 64;
const ROUNDS: usize = 4;

/// Writes `WRITERS` keys at once, `ROUNDS` times, and reads each back with R = 3.
async fn write_and_read_back(cluster: &Cluster, prefix: &str) -> usize {
    let client = cluster.client().await;
    let mut written = 0;
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let client = client.clone();
            let key = format!("{prefix}/{round}/{w}");
            tasks.spawn(async move {
                client
                    .put(&key, key.as_bytes().to_vec())
                    .await
                    .unwrap_or_else(|e| panic!("put {key}: {e}"));
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a writer task");
            written += 1;
        }
    }
    for round in 0..ROUNDS {
        for w in 0..WRITERS {
            let key = format!("{prefix}/{round}/{w}");
            let read = client
                .get_with(&key)
                .r(3)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e}"));
            assert_eq!(read.values, vec![key.as_bytes().to_vec()], "{key}");
        }
    }
    client.close().await;
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_writes_with_group_commit_are_acknowledged_after_shared_fsyncs() {
    let cluster = Cluster::start(3, "[storage]\ndurability = \"sync\"\n").await;
    let written = write_and_read_back(&cluster, "gc").await;
    let all = [0, 1, 2];
    // Each acknowledged put was stored by at least W = 2 replicas through the committer.
    let writes = cluster
        .metric_sum(&all, "shoal_group_commit_writes_sum", &[])
        .await
        .expect("scraping");
    let syncs = cluster
        .metric_sum(&all, "shoal_group_commit_writes_count", &[])
        .await
        .expect("scraping");
    assert!(
        writes >= 2.0 * written as f64,
        "{writes} writes acknowledged by the committer for {written} puts"
    );
    assert!(
        syncs >= 1.0 && syncs <= writes,
        "{syncs} fsyncs for {writes} writes"
    );
    let failures = cluster
        .metric_sum(&all, "shoal_group_commit_failures_total", &[])
        .await
        .expect("scraping");
    assert_eq!(failures, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_writes_without_group_commit_sync_each_write_and_use_no_committer() {
    let cluster = Cluster::start(
        3,
        "[storage]\ndurability = \"sync\"\ngroup_commit = false\n",
    )
    .await;
    write_and_read_back(&cluster, "each").await;
    let syncs = cluster
        .metric_sum(&[0, 1, 2], "shoal_group_commit_writes_count", &[])
        .await
        .expect("scraping");
    assert_eq!(syncs, 0.0, "no committer runs without group commit");
}
