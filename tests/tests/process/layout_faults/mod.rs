//! Layout changes under faults on real processes (issue 9), the scenarios the simulator
//! cannot reach: kill -9 of the joiner or of a sender at each transfer phase
//! ([`kill`]), a replaced node coming back with its old data and layout ([`fence`]), two
//! operators committing at once ([`commits`]), and a new layout every few seconds while
//! a node is paused under client load ([`churn`]). Every scenario ends by checking, on the
//! stopped nodes' stores, that each owner of the final layout holds every acknowledged
//! write (a read at R = N could be answered by two copies and read-repair the third).

mod churn;
mod commits;
mod fence;
mod kill;

use shoal_client::Client;

use crate::harness::{Cluster, LayoutProbe, CHANGE_TIMEOUT};

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
