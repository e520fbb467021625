//! Real node processes over real QUIC on loopback: Merkle-tree anti-entropy repairing a
//! replica that lost its disk or missed writes and deletes (or a partition of values
//! larger together than a frame) while hints could not help, and tombstones reaped on
//! every replica without the deleted values coming back.
//!
//! Convergence is read the way an operator reads it: `shoal aae status --json` (the CLI
//! binary of this package, run against the cluster's `client.toml`). The tests of this
//! suite run one at a time (see [`SERIAL`]): each starts a cluster and writes thousands
//! of keys, and the machine has two cores.

mod restore;
pub(crate) mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_client::{Client, Context, NodeId};
use shoal_proto::metrics::{
    AAE_BATCHES_SPLIT_TOTAL, AAE_BUDGET_RATIO, AAE_KEYS_REPAIRED_TOTAL,
    COORDINATOR_DURATION_SECONDS, REPLICATION_LAG_UNFINISHED_TOTAL, TOMBSTONES_REAPED_TOTAL,
};
use shoal_ring::Ring;
use support::{
    assert_no_hints, assert_reads, cli_aae_status, converged, counts_are, delete_all, found,
    keys_per_partition, not_found, put_new, put_with_contexts, unix_micros, unless_unavailable,
    wait_converged, IN_FLIGHT, N,
};
use tokio::time::Instant;

use crate::harness::{connect, key_values, scrape, wait_until, Cluster};

/// The anti-entropy interval of these tests: every pair of replicas of a partition
/// compares trees at least this often.
const AAE_INTERVAL: Duration = Duration::from_secs(2);
/// Anti-entropy every [`AAE_INTERVAL`], its scheduler ticking every 200 ms, and no
/// hinted handoff: whatever a returning replica gets, anti-entropy brought it.
pub(crate) const AAE_ONLY: &str = "\
[aae]
interval = \"2s\"
tick = \"200ms\"

[handoff]
enabled = false
";
/// How long a cluster may take to converge after a replica comes back (generous: a
/// loaded two-core machine; an idle one takes seconds).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
/// The bound asserted on convergence after a restart, beyond [`AAE_INTERVAL`]: the
/// exchanges themselves, their repairs, and the polling.
const CONVERGE_MARGIN: Duration = Duration::from_secs(30);
/// Connect timeout of the client that reads from one node while the others are down: a
/// dead node costs each request that tries it this much.
const PINNED_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The tests of this suite each run a cluster under load; one at a time keeps them
/// within their deadlines on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Settings for reaping tests: tombstones reapable 3 s after their delete (hints expire
/// before that, as config validation requires), each partition scanned for them every
/// `reap_interval`, anti-entropy every [`AAE_INTERVAL`].
fn reap_settings(reap_interval: &str) -> String {
    reap_settings_with_grace("3s", reap_interval)
}

/// [`reap_settings`] with tombstones reapable `grace` after their delete.
fn reap_settings_with_grace(grace: &str, reap_interval: &str) -> String {
    format!(
        "\
[replication]
tombstone_grace = \"{grace}\"
# One machine's clock: the skew margin needs to be no wider than the short TTLs allow.
max_clock_skew = \"200ms\"

[handoff]
ttl = \"2s\"

[aae]
interval = \"2s\"
tick = \"200ms\"
reap_interval = \"{reap_interval}\"
"
    )
}

/// Writes `live` and `dead` as new keys with W=3, then deletes the `dead` ones with the
/// context of their put (W=3), and checks that reads of them answer not-found.
async fn write_and_delete(client: &Client, live: &[(String, String)], dead: &[(String, String)]) {
    put_new(client, live, 3).await;
    let contexts = put_new(client, dead, 3).await;
    delete_all(client, contexts.into_iter().collect(), 3).await;
    assert_reads(client, &not_found(dead), 3).await;
}

/// The keys anti-entropy repaired (`shoal_aae_keys_repaired_total`) summed over `nodes`.
async fn keys_repaired(cluster: &Cluster, nodes: &[usize]) -> f64 {
    cluster
        .metric_sum(nodes, AAE_KEYS_REPAIRED_TOTAL, &[])
        .await
        .unwrap_or_else(|e| panic!("reading shoal_aae_keys_repaired_total: {e}"))
}

/// Polls until `dead` tombstones are reaped on every one of the N replicas: every tree
/// holds exactly `live` keys per partition (as `shoal aae status --json` shows), and the
/// reapers counted at least `dead * N` keys reaped (`shoal_tombstones_reaped_total`,
/// which the partition's reaper counts for itself and each peer that confirms its
/// deletion). More is normal: an exchange between a replica that reaped a tombstone and
/// one that had not yet copies the tombstone back (a copy of a tombstone is stored, see
/// `Executor::merge_with`), and the next reap removes and counts it again (CI saw 183 of
/// 180 with every tree converged). Returns the count seen then.
async fn wait_reaped(
    cluster: &Cluster,
    ring: &Ring,
    live: &[(String, String)],
    dead: usize,
    timeout: Duration,
) -> f64 {
    let all: Vec<usize> = (0..cluster.len()).collect();
    let ids: Vec<NodeId> = all.iter().map(|&i| cluster.id(i)).collect();
    let expected = keys_per_partition(ring, live.iter().map(|(k, _)| k.as_str()));
    let reaped_total = (dead * N) as f64;
    let partitions = ring.partition_count();
    wait_until(
        "every tombstone to be reaped on every replica",
        timeout,
        || {
            let (all, ids, expected) = (&all, &ids, &expected);
            async move {
                let doc = cli_aae_status(cluster).await?;
                let keys = converged(&doc, partitions, ids)?;
                let reaped = cluster
                    .metric_sum(all, TOMBSTONES_REAPED_TOTAL, &[])
                    .await?;
                counts_are(expected.clone())(&keys)
                    .map_err(|e| format!("{reaped} of {reaped_total} reaped; {e}"))?;
                if reaped >= reaped_total {
                    Ok(reaped)
                } else {
                    Err(format!("{reaped} reaped, expected at least {reaped_total}"))
                }
            }
        },
    )
    .await
}

/// Polls until every pair of replicas of every partition has finished an exchange (as
/// recorded by the pair's smaller id, which starts it) that ended after `after_micros`,
/// and each such exchange succeeded.
async fn wait_exchange_round(client: &Client, ring: &Ring, ids: &[NodeId], after_micros: u64) {
    wait_until(
        "every pair of replicas to finish an exchange",
        CONVERGE_TIMEOUT,
        || async move {
            let mut stale = Vec::new();
            for id in ids {
                let report = client
                    .aae_status(Some(id))
                    .await
                    .map_err(|e| format!("aae status of {id}: {e}"))?;
                for p in &report.partitions {
                    let replicas = ring.preference_list(p.partition, N).nodes;
                    for peer in replicas.iter().filter(|q| *q > id) {
                        match p.exchanges.iter().find(|e| &e.peer == peer) {
                            Some(e) if e.at.as_micros() > after_micros => {
                                if !e.result.starts_with("ok") {
                                    return Err(format!(
                                        "partition {}: {id} with {peer}: {}",
                                        p.partition, e.result
                                    ));
                                }
                            }
                            _ => stale.push(format!("{}:{id}-{peer}", p.partition)),
                        }
                    }
                }
            }
            if stale.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} pairs without an exchange since then, first: {:?}",
                    stale.len(),
                    &stale[..stale.len().min(3)]
                ))
            }
        },
    )
    .await;
}

/// Waits until every running node's anti-entropy budget (`shoal_aae_budget_ratio`) is
/// full again after the write burst, sending fast R=1 reads of `kvs` one at a time
/// meanwhile, so that the deadlines below measure anti-entropy rather than its back-off
/// on a loaded machine. (Without client traffic the budget recovers on its own; see
/// `anti_entropy_resumes_when_client_traffic_stops_after_slow_requests`.)
async fn settle_background_budget(cluster: &mut Cluster, ring: &Ring, kvs: &[(String, String)]) {
    /// Reads per node per poll.
    const READS: usize = 20;
    let running = cluster.running();
    let client = cluster.client().await;
    let cluster = &*cluster;
    wait_until(
        "every node's anti-entropy budget to be full",
        CONVERGE_TIMEOUT,
        || {
            let (client, running) = (&client, &running);
            async move {
                let mut low = Vec::new();
                for &i in running {
                    let id = cluster.id(i);
                    let keys = kvs
                        .iter()
                        .filter(|(k, _)| {
                            ring.preference_list_for_key(k.as_bytes(), N).nodes[0] == id
                        })
                        .take(READS);
                    for (key, _) in keys {
                        client
                            .get_with(key)
                            .r(1)
                            .send()
                            .await
                            .map_err(|e| format!("get {key}: {e}"))?;
                    }
                    let page = scrape(cluster.nodes()[i].metrics).await?;
                    let ratio = page.sum(AAE_BUDGET_RATIO, &[]);
                    if ratio < 0.99 {
                        low.push(format!("{id}: {ratio}"));
                    }
                }
                if low.is_empty() {
                    Ok(())
                } else {
                    Err(format!("budget ratios below 1: {low:?}"))
                }
            }
        },
    )
    .await;
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// A replica whose disk is replaced (stopped, data directory wiped, restarted empty) gets
/// every key back from anti-entropy alone: no hints exist (handoff is off), no read
/// reaches it, and yet within a deadline every partition shows three replicas with equal
/// roots and key counts, the anti-entropy repair counters account for every key, and the
/// node's store holds all 10,000 keys with their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_wiped_disk_gets_every_key_back_from_anti_entropy_alone() {
    const KEYS: usize = 10_000;
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, AAE_ONLY).await;
    let victim = 1;
    let all: Vec<usize> = (0..cluster.len()).collect();
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let partitions = ring.partition_count();

    let kvs = key_values("wiped", 0..KEYS);
    let started = Instant::now();
    put_new(&client, &kvs, 3).await;
    client.close().await;
    eprintln!("wrote {KEYS} keys with W=3 in {:?}", started.elapsed());
    let per_partition = keys_per_partition(&ring, kvs.iter().map(|(k, _)| k.as_str()));
    wait_converged(
        &cluster,
        "every replica to hold every key before the wipe",
        CONVERGE_TIMEOUT,
        partitions,
        counts_are(per_partition.clone()),
    )
    .await;
    cluster.terminate(victim);
    let data = cluster.data_dir(victim);
    std::fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("wiping {}: {e}", data.display()));
    eprintln!(
        "stopped {} and wiped {}",
        cluster.id(victim),
        data.display()
    );
    settle_background_budget(&mut cluster, &ring, &kvs).await;

    let repaired_before = keys_repaired(&cluster, &others).await;
    let started = Instant::now();
    cluster.restart(victim).await;
    let ready = started.elapsed();
    assert_no_hints(&mut cluster).await;
    wait_converged(
        &cluster,
        "anti-entropy to refill the wiped replica",
        CONVERGE_TIMEOUT,
        partitions,
        counts_are(per_partition),
    )
    .await;
    eprintln!(
        "restarted empty, ready in {ready:?}, equal roots after {:?}",
        started.elapsed()
    );

    // Every key the wiped node holds again came through an exchange, counted on the node
    // that merged it (fetched) or on the one that pushed it (the restarted node's counters
    // start from zero).
    let repaired = keys_repaired(&cluster, &all).await - repaired_before;
    assert!(
        repaired >= KEYS as f64,
        "anti-entropy repaired {repaired} keys, fewer than the {KEYS} the wiped node lost"
    );
    assert_no_hints(&mut cluster).await;

    cluster.terminate(victim);
    let checked = cluster.assert_node_stores(victim, &ring, N, &kvs);
    assert_eq!(checked, KEYS, "with N = 3 of 3 nodes, every key");
}

/// A replica that was down while 20,000 keys were written and 2,000 deleted (plus older
/// keys it held being overwritten and deleted), with hinted handoff off, is brought back
/// by anti-entropy within the exchange interval plus a margin: every partition shows
/// equal roots, and the node alone answers R=1 reads with the new data — deleted keys
/// not found, the others with their new value — as R=3 reads do, and its store holds the
/// tombstones and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_writes_and_deletes_converges_within_the_exchange_interval() {
    const OLD: usize = 1_000;
    const NEW: usize = 20_000;
    const DELETED: usize = 2_000;
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, AAE_ONLY).await;
    let victim = 2;
    let victim_id = cluster.id(victim);
    let others: Vec<usize> = (0..cluster.len()).filter(|&i| i != victim).collect();

    // Keys every replica holds before the fault; half are overwritten and half deleted
    // while the victim is down, so it holds values that must not survive.
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let partitions = ring.partition_count();
    let old = key_values("old", 0..OLD);
    let old_contexts = put_new(&client, &old, 3).await;
    client.close().await;

    cluster.kill(victim);
    eprintln!("killed {victim_id}");
    let client = cluster.client().await;
    let started = Instant::now();
    let new = key_values("new", 0..NEW);
    let mut contexts = put_new(&client, &new, 2).await;
    eprintln!("wrote {NEW} keys with W=2 in {:?}", started.elapsed());
    let (old_overwritten, old_deleted) = old.split_at(OLD / 2);
    let overwrites: Vec<(String, String, Option<Context>)> = old_overwritten
        .iter()
        .map(|(k, _)| {
            (
                k.clone(),
                format!("{k}-overwritten"),
                Some(old_contexts[k].clone()),
            )
        })
        .collect();
    put_with_contexts(&client, overwrites, 2).await;
    let mut deletes: Vec<(String, Context)> = new[..DELETED]
        .iter()
        .map(|(k, _)| (k.clone(), contexts.remove(k).unwrap()))
        .collect();
    deletes.extend(
        old_deleted
            .iter()
            .map(|(k, _)| (k.clone(), old_contexts[k].clone())),
    );
    let started = Instant::now();
    delete_all(&client, deletes, 2).await;
    client.close().await;
    eprintln!(
        "deleted {} keys with W=2 in {:?}",
        DELETED + old_deleted.len(),
        started.elapsed()
    );
    // Handoff is off: nothing is waiting to be handed to the victim.
    assert_no_hints(&mut cluster).await;
    settle_background_budget(&mut cluster, &ring, &new[DELETED..]).await;

    // What every replica must end with: the new values, the overwrites, and tombstones.
    let mut expected: Vec<(String, Option<String>)> = Vec::new();
    expected.extend(new[..DELETED].iter().map(|(k, _)| (k.clone(), None)));
    expected.extend(found(&new[DELETED..]));
    expected.extend(
        old_overwritten
            .iter()
            .map(|(k, _)| (k.clone(), Some(format!("{k}-overwritten")))),
    );
    expected.extend(old_deleted.iter().map(|(k, _)| (k.clone(), None)));
    // Tombstones stay in the trees until their grace (a day) ends.
    let per_partition = keys_per_partition(&ring, expected.iter().map(|(k, _)| k.as_str()));

    let repaired_before = keys_repaired(&cluster, &others).await;
    let started = Instant::now();
    cluster.restart(victim).await;
    let ready = started.elapsed();
    wait_converged(
        &cluster,
        "anti-entropy to bring the returning replica up to date",
        AAE_INTERVAL + CONVERGE_MARGIN,
        partitions,
        counts_are(per_partition),
    )
    .await;
    let converged_after = started.elapsed() - ready;
    eprintln!(
        "{victim_id} restarted: ready in {ready:?}, then equal roots everywhere after \
         {converged_after:?} (interval {AAE_INTERVAL:?})"
    );
    assert!(converged_after <= AAE_INTERVAL + CONVERGE_MARGIN);
    assert_no_hints(&mut cluster).await;
    // Anti-entropy carried every key the victim missed: the new keys (the deleted ones as
    // tombstones) and the old keys overwritten or deleted.
    let all: Vec<usize> = (0..cluster.len()).collect();
    let repaired = keys_repaired(&cluster, &all).await - repaired_before;
    assert!(
        repaired >= (NEW + OLD) as f64,
        "anti-entropy repaired {repaired} keys, fewer than the {} {victim_id} missed",
        NEW + OLD
    );

    // With every replica equal, R=3 reads see the new data.
    let client = cluster.client().await;
    assert_reads(&client, &expected, 3).await;
    client.close().await;

    // The SDK routes each key to its preference list, so to make the victim answer from
    // its own store alone, stop the others: with N = 3 on 3 nodes there is no fallback,
    // and an R=1 read is answered by the only replica left.
    for &i in &others {
        cluster.terminate(i);
    }
    let mut config = cluster.client_config();
    config.seeds = vec![cluster.nodes()[victim].addr.into()];
    config.connect_timeout = PINNED_CONNECT_TIMEOUT;
    let client = connect(config).await;
    let started = Instant::now();
    assert_reads(&client, &expected, 1).await;
    client.close().await;
    eprintln!(
        "{} R=1 reads answered by {victim_id} alone in {:?}",
        expected.len(),
        started.elapsed()
    );

    // And its store holds exactly that: one value, or only tombstones.
    cluster.terminate(victim);
    let objects = cluster.node_objects(victim, &ring, N, expected.iter().map(|(k, _)| k.as_str()));
    assert_eq!(
        objects.len(),
        expected.len(),
        "with N = 3 of 3 nodes, every key"
    );
    let want: BTreeMap<&str, &Option<String>> =
        expected.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let wrong: Vec<String> = objects
        .iter()
        .filter(|(key, object)| match (want[key.as_str()], object) {
            (Some(v), Some(o)) => o.values().collect::<Vec<_>>() != vec![v.as_bytes()],
            (None, Some(o)) => !o.is_tombstoned(),
            (_, None) => true,
        })
        .map(|(key, object)| format!("{key}: {object:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} keys are wrong in {victim_id}'s store; first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// Tombstones older than `tombstone_grace` are reaped on every replica (each tree drops
/// to the live keys, and the reaping counter counts each deleted key once per replica),
/// reads of the reaped keys answer not-found, a round of anti-entropy exchanges after the
/// reap brings nothing back, and a key written again after its reap comes back with only
/// its new value.
///
/// `reap_interval` is 10 s here: each node scans at most one partition per tick (200 ms),
/// so a shorter interval starves partitions (see
/// `every_partition_is_scanned_for_tombstones_within_a_short_reap_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaped_tombstones_stay_gone_and_a_rewritten_key_has_only_its_new_value() {
    const LIVE: usize = 300;
    const DEAD: usize = 600;
    const REWRITTEN: usize = 100;
    /// How long reaping may take after the deletes: the grace, then up to a reap interval
    /// and a scan of every partition (one per tick per node); generous for a loaded
    /// machine.
    const REAP_TIMEOUT: Duration = Duration::from_secs(120);
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &reap_settings("10s")).await;
    let all: Vec<usize> = (0..cluster.len()).collect();
    let ids: Vec<NodeId> = all.iter().map(|&i| cluster.id(i)).collect();
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let partitions = ring.partition_count();

    let live = key_values("live", 0..LIVE);
    let dead = key_values("dead", 0..DEAD);
    write_and_delete(&client, &live, &dead).await;
    let deleted_at = Instant::now();
    settle_background_budget(&mut cluster, &ring, &live).await;
    let reaped_then = wait_reaped(&cluster, &ring, &live, DEAD, REAP_TIMEOUT).await;
    eprintln!(
        "{DEAD} tombstones reaped on {N} replicas {:?} after the deletes ({reaped_then} reaps)",
        deleted_at.elapsed()
    );
    let reaped_at_micros = unix_micros();
    let gone = not_found(&dead);
    assert_reads(&client, &gone, 3).await;
    assert_reads(&client, &gone, 1).await;

    // A full round of exchanges after the reap: every pair of replicas of every partition
    // compared trees again, and nothing came back.
    wait_exchange_round(&client, &ring, &ids, reaped_at_micros).await;
    let doc = cli_aae_status(&cluster).await.unwrap();
    let keys = converged(&doc, partitions, &ids).unwrap();
    counts_are(keys_per_partition(
        &ring,
        live.iter().map(|(k, _)| k.as_str()),
    ))(&keys)
    .unwrap();
    let reaped = cluster
        .metric_sum(&all, TOMBSTONES_REAPED_TOTAL, &[])
        .await
        .unwrap();
    assert_eq!(reaped, reaped_then, "nothing came back to be reaped again");
    assert_reads(&client, &gone, 3).await;

    // Written again: half as new keys, half with the context of a read after the reap.
    let mut rewrites = Vec::new();
    for (i, (key, _)) in dead[..REWRITTEN].iter().enumerate() {
        let context = if i % 2 == 0 {
            None
        } else {
            let read =
                unless_unavailable(&format!("get {key}"), || client.get_with(key).r(3).send())
                    .await
                    .unwrap();
            assert!(!read.found, "{key} was reaped");
            Some(read.context)
        };
        rewrites.push((key.clone(), format!("{key}-reborn"), context));
    }
    let reborn: Vec<(String, Option<String>)> = rewrites
        .iter()
        .map(|(k, v, _)| (k.clone(), Some(v.clone())))
        .collect();
    put_with_contexts(&client, rewrites, 3).await;
    assert_reads(&client, &reborn, 3).await;
    assert_reads(&client, &gone[REWRITTEN..], 3).await;
    assert_reads(&client, &found(&live), 3).await;
    client.close().await;
    let expected = keys_per_partition(
        &ring,
        live.iter()
            .map(|(k, _)| k.as_str())
            .chain(reborn.iter().map(|(k, _)| k.as_str())),
    );
    wait_converged(
        &cluster,
        "the trees to hold the live and rewritten keys",
        CONVERGE_TIMEOUT,
        partitions,
        counts_are(expected),
    )
    .await;
}

/// A session that deleted keys reads them as not found once their tombstones are reaped
/// on every replica, and reads back what it writes to them afterwards through another
/// coordinator. Before, no reply could include the deletes' contexts once their dots
/// were gone: every such read failed `NotCovered` until the session forgot the key. The
/// new values' reads failed too when another node coordinated them (the first one's
/// clock entry covers its own earlier dots, another's does not): the session's write
/// carries what it deleted now. Keys the session only read, deleted by another client,
/// read as not found after their reap too, also after every node restarted: the
/// replicas that reaped them answer their tombstones' clocks, which they keep on disk
/// (before, those reads failed `NotCovered`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_deleted_keys_as_gone_after_the_reap_and_its_later_writes() {
    use shoal_client::WriteOptions;
    const DEAD: usize = 24;
    const REAP_TIMEOUT: Duration = Duration::from_secs(120);
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &reap_settings("10s")).await;
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let session = client.session();
    // A second session that reads the keys another client deletes before the delete,
    // and again only after every node restarted.
    let later = client.session();
    // Keys n0 coordinates (their first primary), so that n0 minted every dot of the put
    // and the delete, and the next writes, with n0 down, are another node's.
    let first = cluster.id(0);
    let dead: Vec<_> = key_values("gone", 0..20 * DEAD)
        .into_iter()
        .filter(|(k, _)| ring.preference_list_for_key(k.as_bytes(), N).nodes[0] == first)
        .take(DEAD)
        .collect();
    assert_eq!(dead.len(), DEAD);
    // Keys another client writes and, after the session read them, deletes.
    let theirs = key_values("theirs", 0..DEAD);
    let mut their_puts = Vec::with_capacity(DEAD);
    for (key, value) in &theirs {
        let put = client
            .put_with(key, value.clone())
            .w(3)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        their_puts.push(put);
        for s in [&session, &later] {
            let read = s
                .get(key)
                .await
                .unwrap_or_else(|e| panic!("session read of {key}: {e}"));
            assert!(read.found, "{key} not found");
        }
    }
    for ((key, _), put) in theirs.iter().zip(&their_puts) {
        client
            .delete_with(key)
            .context(put)
            .w(3)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }
    for (key, value) in &dead {
        let all = WriteOptions::default().w(3);
        let put = session
            .put_opts(key, value.clone(), None, all)
            .await
            .unwrap_or_else(|e| panic!("session put {key}: {e}"));
        session
            .delete_opts(key, Some(&put), all)
            .await
            .unwrap_or_else(|e| panic!("session delete {key}: {e}"));
    }
    settle_background_budget(&mut cluster, &ring, &[]).await;
    wait_reaped(&cluster, &ring, &[], 2 * DEAD, REAP_TIMEOUT).await;
    for (key, _) in dead.iter().chain(&theirs) {
        let read = session
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("session read of {key} after its reap: {e}"));
        assert!(!read.found, "{key} came back: {:?}", read.values);
    }
    // Every node restarted: the reaped clocks are read back from disk, and the keys
    // another client deleted read as not found (not `NotCovered`) to the session that
    // last read them before the delete.
    for i in 0..cluster.len() {
        cluster.terminate(i);
    }
    for i in 0..cluster.len() {
        cluster.restart(i).await;
    }
    for (key, _) in &theirs {
        let read = later
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("session read of {key} after the restarts: {e}"));
        assert!(!read.found, "{key} came back: {:?}", read.values);
    }
    cluster.terminate(0);
    for (key, value) in &dead {
        session
            .put(key, format!("{value}-again"))
            .await
            .unwrap_or_else(|e| panic!("session put of {key} after its reap: {e}"));
    }
    for (key, value) in &dead {
        let read = session
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("session read of {key} written again: {e}"));
        assert_eq!(
            read.values,
            vec![format!("{value}-again").into_bytes()],
            "{key}"
        );
    }
}

/// With `reap_interval = 1s` and the scheduler ticking every 200 ms, every partition is
/// still scanned (at a lower rate than asked, at worst): the tombstones of every
/// partition are reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_is_scanned_for_tombstones_within_a_short_reap_interval() {
    const LIVE: usize = 100;
    const DEAD: usize = 600;
    /// Far longer than a scan of every partition takes (about 22 partitions led by each
    /// node, one per 200 ms tick).
    const REAP_TIMEOUT: Duration = Duration::from_secs(60);
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &reap_settings("1s")).await;
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let live = key_values("live", 0..LIVE);
    let dead = key_values("dead", 0..DEAD);
    write_and_delete(&client, &live, &dead).await;
    client.close().await;
    settle_background_budget(&mut cluster, &ring, &live).await;
    wait_reaped(&cluster, &ring, &live, DEAD, REAP_TIMEOUT).await;
}

/// Anti-entropy resumes once client traffic stops, even when the last client requests
/// were slow: after R=3 reads that waited for a briefly frozen replica, that replica's
/// disk is wiped and it restarts, and with no client traffic at all it is refilled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_resumes_when_client_traffic_stops_after_slow_requests() {
    const KEYS: usize = 1_000;
    /// Reads made slow by the frozen replica: all in flight at once, so that every one
    /// waits for it.
    const SLOW_READS: usize = IN_FLIGHT;
    /// How long the replica is frozen: far above `aae.latency_target` (50 ms), below the
    /// failure detector's probe timeout (1 s), so the reads wait for it and succeed.
    const FROZEN_FOR: Duration = Duration::from_millis(600);
    const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, AAE_ONLY).await;
    let victim = 2;
    let victim_id = cluster.id(victim);
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let kvs = key_values("idle", 0..KEYS);
    put_new(&client, &kvs, 3).await;

    // Slow reads, coordinated by the two other nodes (the first of each key's preference
    // list), each waiting for the frozen victim's reply.
    let slow: Vec<(String, Option<String>)> = kvs
        .iter()
        .filter(|(k, _)| ring.preference_list_for_key(k.as_bytes(), N).nodes[0] != victim_id)
        .take(SLOW_READS)
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    cluster.pause(victim);
    let reads = tokio::spawn({
        let client = client.clone();
        async move { assert_reads(&client, &slow, 3).await }
    });
    // The fault itself, not a synchronisation: the replica stays frozen this long.
    tokio::time::sleep(FROZEN_FOR).await;
    cluster.resume(victim);
    reads.await.expect("the slow reads");
    client.close().await;
    // No client request from here on.
    cluster.terminate(victim);
    std::fs::remove_dir_all(cluster.data_dir(victim)).unwrap();
    cluster.restart(victim).await;
    let started = Instant::now();
    let ids: Vec<NodeId> = (0..cluster.len()).map(|i| cluster.id(i)).collect();
    let expected = keys_per_partition(&ring, kvs.iter().map(|(k, _)| k.as_str()));
    let cluster = &cluster;
    wait_until(
        "anti-entropy to refill the wiped replica of an idle cluster",
        CONVERGE_WITHIN,
        || {
            let (ids, expected, ring) = (&ids, &expected, &ring);
            async move {
                let doc = cli_aae_status(cluster).await?;
                let outcome = converged(&doc, ring.partition_count(), ids)
                    .and_then(|keys| counts_are(expected.clone())(&keys));
                let Err(e) = outcome else {
                    return Ok(());
                };
                // What admission control is doing, for the failure message.
                let mut budgets = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let page = scrape(cluster.nodes()[i].metrics).await?;
                    let gets = page.sum(&format!("{COORDINATOR_DURATION_SECONDS}_count"), &[]);
                    let seconds = page.sum(&format!("{COORDINATOR_DURATION_SECONDS}_sum"), &[]);
                    budgets.push(format!(
                        "{id}: budget {}, mean client request latency {:.3} s",
                        page.sum(AAE_BUDGET_RATIO, &[]),
                        seconds / gets.max(1.0)
                    ));
                }
                Err(format!("{e}; {budgets:?}"))
            }
        },
    )
    .await;
    eprintln!("equal roots after {:?}", started.elapsed());
}

/// A partition of large values: six keys of one partition get 3 MiB values while one
/// replica is down (hinted handoff off), about 18 MiB for one exchange to move, more than
/// a frame (one 16 MiB object and its envelope) holds. The exchanges move them in batches
/// that fit (the split is counted), and the returning replica converges and stores every
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_large_values_missed_by_a_replica_converges() {
    const VALUE_BYTES: usize = 3 << 20;
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, AAE_ONLY).await;
    let victim = 0;
    let all: Vec<usize> = (0..cluster.len()).collect();
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let target = ring.partition_of(b"large-0");
    let kvs: Vec<(String, String)> = (0..)
        .map(|i| format!("large-{i}"))
        .filter(|k| ring.partition_of(k.as_bytes()) == target)
        .take(6)
        .map(|k| {
            let value = format!("{k}=") + &"x".repeat(VALUE_BYTES);
            (k, value)
        })
        .collect();
    cluster.terminate(victim);
    put_new(&client, &kvs, 2).await;
    client.close().await;
    // A copy for the victim is sent until `rpc_timeout` ends, and a handshake still
    // pending when the victim is back on its port completes: restarted at once, it could
    // get the writes from their coordinators and leave anti-entropy nothing to repair.
    // Every copy for the stopped replica failed once its coordinator stopped delivering
    // each write short of a primary.
    cluster
        .wait_metric_sum(
            &others,
            REPLICATION_LAG_UNFINISHED_TOTAL,
            &[],
            kvs.len() as f64,
            Duration::from_secs(60),
        )
        .await;
    let repaired_before = keys_repaired(&cluster, &others).await;

    let started = Instant::now();
    cluster.restart(victim).await;
    wait_converged(
        &cluster,
        "anti-entropy to copy the large values to the returning replica",
        CONVERGE_TIMEOUT,
        ring.partition_count(),
        counts_are(keys_per_partition(
            &ring,
            kvs.iter().map(|(k, _)| k.as_str()),
        )),
    )
    .await;
    eprintln!("equal roots {:?} after the restart", started.elapsed());
    // The trees change when a merge lands in storage; the engine counts the keys a moment
    // later, when the merge's answer reaches it (on a loaded machine the count lagged the
    // equal roots by 2 of the 6 keys).
    let missed = kvs.len() as f64;
    wait_until(
        "anti-entropy's repair count to reach the keys the replica missed",
        CONVERGE_TIMEOUT,
        || {
            let all = &all;
            let cluster = &cluster;
            async move {
                let repaired = cluster
                    .metric_sum(all, AAE_KEYS_REPAIRED_TOTAL, &[])
                    .await?
                    - repaired_before;
                if repaired >= missed {
                    Ok(())
                } else {
                    Err(format!(
                        "anti-entropy repaired {repaired} keys, fewer than the {missed} the replica missed"
                    ))
                }
            }
        },
    )
    .await;
    let split = cluster
        .metric_sum(&all, AAE_BATCHES_SPLIT_TOTAL, &[])
        .await
        .unwrap_or(0.0);
    assert!(
        split > 0.0,
        "a batch was cut at its byte bound (shoal_aae_batches_split_total = {split})"
    );
    cluster.terminate(victim);
    assert_eq!(
        cluster.assert_node_stores(victim, &ring, N, &kvs),
        kvs.len(),
        "the returning replica stores every large value"
    );
}
