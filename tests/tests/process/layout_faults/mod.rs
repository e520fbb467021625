//! Layout changes under faults on real processes (issue 9), the scenarios the simulator
//! cannot reach: kill -9 of the joiner or of a sender at each transfer phase
//! ([`kill`]), a replaced node coming back with its old data and layout ([`fence`]), two
//! operators committing at once ([`commits`]), also across a partition
//! ([`partitioned`]), a coordinator paused with writes in flight while its
//! partitions move ([`paused`]), a cluster grown 3 → 5, shrunk by a decommission and
//! by the removal of a dead node ([`lifecycle`]), and a new layout every few seconds while
//! a node is paused under client load ([`churn`]). Every scenario ends by checking, on the
//! stopped nodes' stores, that each owner of the final layout holds every acknowledged
//! write (a read at R = N could be answered by two copies and read-repair the third).

mod churn;
mod commits;
mod fence;
mod kill;
mod lifecycle;
mod partitioned;
mod paused;

use shoal_client::{Client, NodeId};
use shoal_proto::wire::{ClientResponse, ClusterReply, ClusterRequest, StageRequest};

use crate::aae::support::{cli_aae_status, differing_error, unequal};
use crate::harness::{wait_hints_drained, wait_until, Cluster, LayoutProbe, CHANGE_TIMEOUT};

/// Transfers slowed to about 100 keys a second (small batches, one exchange at a time), so
/// that a transfer of a few hundred keys lasts seconds and its middle can be observed
/// from the metrics;
/// gossip every 2 s, so that the trackers that lead to the old owners' drop spread over
/// several seconds after the joiner synced.
const SLOW_TRANSFERS: &str = "[aae]\nrepair_keys_per_second = 100\nbatch = 16\n\
                              max_concurrent_exchanges = 1\n\
                              [membership]\ngossip_interval = \"2s\"\n";

/// Starts a candidate with `shoal dev add`, waits until node 0 lists it, and stages its
/// join there (the SDK sends cluster calls to node 0 while it is up). Returns its index.
async fn stage_candidate_join(
    cluster: &mut Cluster,
    probe: &LayoutProbe,
    client: &Client,
) -> usize {
    let i = cluster.add_candidate();
    let id = cluster.id(i);
    probe.wait_candidate(cluster, 0, &id).await;
    client
        .stage_join(&id, None, 1)
        .await
        .unwrap_or_else(|e| panic!("staging the join of {id}: {e}"));
    i
}

/// Stages at node `node` the join of candidate `id` with `weight` (once `node` lists it),
/// through `probe` so that the stage reaches the node named: two operators staging
/// different weights at two nodes make two different layouts for one version.
async fn stage_join_at(
    probe: &LayoutProbe,
    cluster: &Cluster,
    node: usize,
    id: &NodeId,
    weight: u32,
) {
    probe.wait_candidate(cluster, node, id).await;
    let stage = StageRequest::Join {
        id: id.clone(),
        zone: None,
        weight,
    };
    match probe
        .cluster(cluster, node, ClusterRequest::Stage(stage))
        .await
    {
        Ok(ClientResponse::Cluster(ClusterReply::Staged(s))) if s.len() == 1 => {}
        other => panic!("staging at node {node}: {other:?}"),
    }
}

/// Stops every running node with SIGTERM (so that everything acknowledged is on disk).
fn stop_all(cluster: &mut Cluster) {
    for i in cluster.running() {
        cluster.terminate(i);
    }
}

/// Waits (bounded by [`CHANGE_TIMEOUT`]) for `more` acknowledged puts of `load` after
/// the current count.
async fn more_acked(load: &crate::harness::Load, more: usize) {
    load.wait_acked(load.acked(), more, CHANGE_TIMEOUT).await;
}

/// Waits (bounded by [`CHANGE_TIMEOUT`] each) until the running nodes hold no hint and
/// `shoal aae status` shows every partition with `n` replicas of equal root and key
/// count: the repair of writes a restarted node missed while it was down is done.
/// Hinted handoff and anti-entropy are asynchronous by design: a write acknowledged by
/// two owners while the third was down reaches the third only through them, so a check
/// of every owner's store must come after them, not as soon as the layout settled.
async fn wait_repaired(cluster: &mut Cluster, client: &Client, n: usize) {
    let running: Vec<NodeId> = cluster
        .running()
        .into_iter()
        .map(|i| cluster.id(i))
        .collect();
    let cluster = &*cluster;
    wait_hints_drained(client, &running, CHANGE_TIMEOUT).await;
    wait_until(
        "every partition's replicas to have equal trees",
        CHANGE_TIMEOUT,
        || async {
            let doc = cli_aae_status(cluster).await?;
            if !doc.unreachable.is_empty() {
                return Err(format!("unreachable: {:?}", doc.unreachable));
            }
            let differing: Vec<String> = doc
                .partitions
                .iter()
                .filter_map(|p| {
                    if p.replicas.len() == n {
                        unequal(p)
                    } else {
                        Some(format!("{}: {} replicas", p.partition, p.replicas.len()))
                    }
                })
                .collect();
            differing_error(&differing)
        },
    )
    .await;
}
