//! Real node processes over real QUIC on loopback: a node killed with SIGKILL or frozen
//! with SIGSTOP while the cluster keeps serving, hinted handoff piling up and draining,
//! and the returning node's store holding every write it missed.

use std::time::Duration;

use shoal_client::{Client, MemberState, NodeId};
use shoal_proto::wire::{ClientRequest, ClientResponse, ReadOptions};
use shoal_transport::TransportConfig;
use tokio::time::Instant;

use crate::harness::{
    assert_all_readable, key_values, pending_hints, put_all, try_ask, wait_hints_drained,
    wait_until, Cluster, CLIENT_CONNECT_TIMEOUT, RAW_REQUEST_TIMEOUT,
};

/// Keys written before the fault.
const KEYS_BEFORE: usize = 2_000;
/// Keys written while a node is down.
const KEYS_DURING: usize = 500;
/// Requests in flight at once.
const IN_FLIGHT: usize = 16;
/// Write and read quorums of the tests (the dev cluster's defaults for N = 3).
const W: u8 = 2;
const R: u8 = 2;
/// Replicas per key.
const N: usize = 3;
/// Deadline for hints to pile up, and for them to drain after the node returns.
const HINT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for the others to see a member's new state.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits (up to [`HINT_TIMEOUT`]) until the nodes other than `victim` hold at least `min`
/// hints for it in all, and returns how many they hold.
async fn wait_hints_for(
    cluster: &Cluster,
    status: &Client,
    victim: usize,
    min: u64,
    what: &str,
) -> u64 {
    let target = &cluster.id(victim);
    let reporters = &cluster.ids(
        &(0..cluster.len())
            .filter(|&i| i != victim)
            .collect::<Vec<_>>(),
    );
    wait_until(what, HINT_TIMEOUT, || async move {
        let hints = pending_hints(status, reporters).await?;
        let total: u64 = hints
            .iter()
            .filter(|((_, t), _)| t == target)
            .map(|(_, count)| *count)
            .sum();
        if total >= min {
            Ok(total)
        } else {
            Err(format!("{total} hints for {target}"))
        }
    })
    .await
}

/// Restarts node `victim` and waits (up to [`HINT_TIMEOUT`]) until no node holds a hint.
async fn restart_until_hints_drained(cluster: &mut Cluster, victim: usize, status: Client) {
    let all: Vec<NodeId> = (0..cluster.len()).map(|i| cluster.id(i)).collect();
    let started = Instant::now();
    cluster.restart(victim).await;
    wait_hints_drained(&status, &all, HINT_TIMEOUT).await;
    status.close().await;
    eprintln!("restarted, hints drained in {:?}", started.elapsed());
}

/// Writes `KEYS_BEFORE` keys, SIGKILLs node `victim`, reads them all back, writes
/// `KEYS_DURING` more, and returns those while the node is still down.
async fn write_kill_read_write(
    cluster: &mut Cluster,
    victim: usize,
) -> (Vec<(String, String)>, shoal_ring::Ring) {
    let client = cluster.client().await;
    let info = client.cluster_info().await;
    assert_eq!(
        (usize::from(info.n), info.r, info.w),
        (N, R, W),
        "dev cluster quorums"
    );
    let before = key_values("before", 0..KEYS_BEFORE);
    let started = Instant::now();
    put_all(&client, &before, W, IN_FLIGHT).await;
    client.close().await;
    eprintln!("wrote {KEYS_BEFORE} keys in {:?}", started.elapsed());

    cluster.kill(victim);
    eprintln!("killed {}", cluster.id(victim));
    // A fresh client (a client connected before the kill is covered by
    // `a_client_connected_before_a_kill_reads_from_the_live_replicas`).
    let started = Instant::now();
    let client = cluster.client().await;
    assert_all_readable(&client, &before, R, IN_FLIGHT).await;
    eprintln!("read {KEYS_BEFORE} keys back in {:?}", started.elapsed());
    let started = Instant::now();
    let during = key_values("during", 0..KEYS_DURING);
    put_all(&client, &during, W, IN_FLIGHT).await;
    client.close().await;
    eprintln!("wrote {KEYS_DURING} keys in {:?}", started.elapsed());
    (during, info.ring)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_through_a_killed_node_and_hand_its_writes_off_after_restart() {
    let mut cluster = Cluster::start(3, "").await;
    let victim = 1;
    let victim_id = cluster.id(victim);
    let (during, ring) = write_kill_read_write(&mut cluster, victim).await;

    // With three nodes and N = 3 there is no fallback: each coordinator keeps a hint for
    // the dead primary itself, one per key written while it was down.
    let status = cluster.status_client().await;
    let piled = wait_hints_for(
        &cluster,
        &status,
        victim,
        KEYS_DURING as u64,
        "a hint per key written while the node was down",
    )
    .await;
    assert!(piled >= KEYS_DURING as u64);
    eprintln!("{piled} hints for {victim_id}");

    restart_until_hints_drained(&mut cluster, victim, status).await;

    cluster.terminate(victim);
    let checked = cluster.assert_node_stores(victim, &ring, N, &during);
    assert_eq!(checked, KEYS_DURING, "with N = 3 of 3 nodes, every key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_pile_hints_on_fallbacks_for_a_killed_node_and_drain_them_after_restart() {
    let mut cluster = Cluster::start(5, "").await;
    let victim = 2;
    let victim_id = cluster.id(victim);
    let (during, ring) = write_kill_read_write(&mut cluster, victim).await;
    let owned = during
        .iter()
        .filter(|(k, _)| {
            ring.preference_list_for_key(k.as_bytes(), N)
                .contains(&victim_id)
        })
        .count();
    assert!(owned > 0, "the victim is a primary of some keys");

    // The copies for the dead primary went to fallback nodes as hints.
    let status = cluster.status_client().await;
    let piled = wait_hints_for(
        &cluster,
        &status,
        victim,
        1,
        "hints for the killed node on other nodes",
    )
    .await;
    eprintln!("{piled} hints for {victim_id} on other nodes");

    restart_until_hints_drained(&mut cluster, victim, status).await;

    cluster.terminate(victim);
    let checked = cluster.assert_node_stores(victim, &ring, N, &during);
    assert_eq!(checked, owned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_routed_around_seen_down_then_up_and_catches_up() {
    /// How long the node stays frozen at least: well past the failure detector's probe
    /// timeout (1 s by default).
    const FROZEN_FOR: Duration = Duration::from_secs(4);
    /// The nodes' request timeout (their default), passed explicitly on every request.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    /// Bounds of the loop that writes while the node is frozen.
    const MAX_OPS: usize = 10_000;
    const MAX_FROZEN: Duration = Duration::from_secs(60);

    let mut cluster = Cluster::start(3, "").await;
    let victim = 2;
    let victim_id = cluster.id(victim);
    let all: Vec<NodeId> = (0..cluster.len()).map(|i| cluster.id(i)).collect();
    let live: Vec<usize> = (0..cluster.len()).filter(|&i| i != victim).collect();
    let victim_only = [victim];
    let status = cluster.status_client().await;
    let ring = status.cluster_info().await.ring;

    cluster.pause(victim);
    let frozen_at = Instant::now();
    // A client made after the freeze (see `write_kill_read_write` for why).
    let client = cluster.client().await;
    let mut written = Vec::new();
    let mut seen_down = false;
    while frozen_at.elapsed() < FROZEN_FOR || !seen_down {
        assert!(
            written.len() < MAX_OPS && frozen_at.elapsed() < MAX_FROZEN,
            "after {} writes in {:?} the others still do not see {victim_id} down",
            written.len(),
            frozen_at.elapsed()
        );
        let (key, value) = (
            format!("frozen-{:05}", written.len()),
            format!("value-{:05}", written.len()),
        );
        let started = Instant::now();
        client
            .put_with(&key, value.clone())
            .w(W)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key} while {victim_id} is frozen: {e}"));
        let read = client
            .get_with(&key)
            .r(R)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key} while {victim_id} is frozen: {e}"));
        assert_eq!(read.values, vec![value.clone().into_bytes()], "{key}");
        // Both within the request timeout, plus one failed dial of the frozen node each.
        let took = started.elapsed();
        assert!(
            took < REQUEST_TIMEOUT + 2 * CLIENT_CONNECT_TIMEOUT,
            "put and get of {key} took {took:?}"
        );
        written.push((key, value));
        if !seen_down {
            // A status that fails (a live node slow to answer) counts as "not yet".
            seen_down = cluster
                .views_agree(&status, &live, &victim_only, MemberState::Down)
                .await
                .is_ok();
        }
    }
    client.close().await;
    eprintln!(
        "{} writes and reads while {victim_id} was frozen for {:?}",
        written.len(),
        frozen_at.elapsed()
    );

    cluster.resume(victim);
    wait_until(
        "the others to see the resumed node up",
        STATE_TIMEOUT,
        || cluster.views_agree(&status, &live, &victim_only, MemberState::Up),
    )
    .await;
    wait_hints_drained(&status, &all, HINT_TIMEOUT).await;
    status.close().await;

    cluster.terminate(victim);
    let checked = cluster.assert_node_stores(victim, &ring, N, &written);
    assert_eq!(checked, written.len(), "with N = 3 of 3 nodes, every key");
}

/// A client that was connected before a node died keeps reading from the live replicas,
/// as a fresh client does: with R = 2 and two replicas up, every read succeeds.
///
/// A get whose key has the killed node first in its preference list goes out on the
/// client's cached connection to it and gets no answer until the connection's idle
/// timeout closes it; a get changes nothing, so the SDK then sends it to the next
/// replica (a write of unknown outcome is never resent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connected_before_a_kill_reads_from_the_live_replicas() {
    let mut cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    let kvs = key_values("connected", 0..200);
    put_all(&client, &kvs, W, IN_FLIGHT).await;
    cluster.kill(1);
    assert_all_readable(&client, &kvs, R, IN_FLIGHT).await;
    client.close().await;
}

/// A node killed and started again at once is read at R = 3 through each of the others
/// straight away: their connections to its previous process get a stateless reset at
/// their first packet (a node's reset key comes from its private key), and their replica
/// reads go again on new connections. Before, each of them waited out the old connection
/// (nothing answered on it) and the reads, whose timeout is shorter than that wait, failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_once_answers_the_replica_reads_of_the_others() {
    let mut cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    client
        .put_with("restarted", "v")
        .w(3)
        .send()
        .await
        .expect("the write on every replica");
    client.close().await;
    cluster.kill(2);
    cluster.restart(2).await;
    let endpoint = cluster.raw_client(TransportConfig::default());
    for i in [0, 1] {
        let read = ClientRequest::Get {
            key: b"restarted".to_vec(),
            options: ReadOptions {
                r: Some(3),
                pr: None,
                timeout: Some(Duration::from_millis(1500)),
            },
        };
        match try_ask(
            &endpoint,
            cluster.nodes()[i].addr,
            read,
            RAW_REQUEST_TIMEOUT,
        )
        .await
        {
            Ok(ClientResponse::Get(reply)) => {
                assert_eq!(
                    reply.values,
                    vec![b"v".to_vec()],
                    "through {}",
                    cluster.id(i)
                );
            }
            other => panic!("a read at R = 3 through {}: {other:?}", cluster.id(i)),
        }
    }
    endpoint.close().await;
}
