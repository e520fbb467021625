//! The SDK's helpers against a real cluster: read-modify-write under concurrent updaters.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_client::resolve;
use shoal_proto::wire::{
    decode_response, encode_request, ClientRequest, ClientResponse, Request, Response,
};
use shoal_transport::TransportConfig;

use crate::harness::{pending_hints, wait_until, Cluster, RAW_REQUEST_TIMEOUT};

/// Updaters racing on one key, each adding its own items with `Client::update` and the
/// set-union resolver, lose nothing: the final read has one value with every item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_with_set_union_lose_no_item_and_leave_one_value() {
    let cluster = Cluster::start(3, "").await;
    const UPDATERS: usize = 4;
    const ITEMS: usize = 5;
    let mut tasks = Vec::new();
    for u in 0..UPDATERS {
        let client = cluster.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..ITEMS {
                let item = format!("item-{u}-{i}");
                client
                    .update_with("cart", |siblings| {
                        let mut all = siblings.to_vec();
                        all.push(item.clone().into_bytes());
                        resolve::union_lines(&all)
                    })
                    .attempts(20)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("update {item}: {e}"));
            }
            client.close().await;
        }));
    }
    for t in tasks {
        t.await.expect("an updater panicked");
    }
    let client = cluster.client().await;
    let read = client.get_with("cart").r(3).send().await.unwrap();
    assert_eq!(read.values.len(), 1, "siblings left: {:?}", read.values);
    let items: BTreeSet<String> = String::from_utf8(read.values[0].clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = (0..UPDATERS)
        .flat_map(|u| (0..ITEMS).map(move |i| format!("item-{u}-{i}")))
        .collect();
    assert_eq!(items, want);
    client.close().await;
}

/// Each sibling of a read carries the time its write was accepted (the coordinator's wall
/// clock, here the same host's), and `resolve::last_written` with
/// `update_siblings_with` keeps the sibling written last, whatever the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_report_when_each_sibling_was_written_and_last_written_keeps_the_latest() {
    use std::time::{Duration, SystemTime};
    let cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    // Blind writes make siblings; "b-later" sorts before "z-earlier" by bytes, so only
    // the write times can pick it.
    let mut windows = Vec::new();
    for value in ["z-earlier", "b-later"] {
        let before = SystemTime::now();
        client.put("lww", value).await.unwrap();
        windows.push((value, before, SystemTime::now()));
    }
    let read = client.get_with("lww").r(3).send().await.unwrap();
    assert_eq!(read.values.len(), 2, "{:?}", read.values);
    assert_eq!(read.written_at.len(), 2);
    let siblings = read.siblings();
    for (value, before, after) in &windows {
        let s = siblings
            .iter()
            .find(|s| s.value == value.as_bytes())
            .unwrap_or_else(|| panic!("{value} among {siblings:?}"));
        let at = s.written_at.expect("a write time");
        // Microsecond precision, and the node's clock never goes backwards.
        let slack = Duration::from_millis(1);
        assert!(
            at + slack >= *before && at <= *after + slack,
            "{value} written at {at:?}, outside its put's window {before:?}..{after:?}"
        );
    }
    assert_eq!(resolve::last_written(&siblings), Some(b"b-later".to_vec()));
    client
        .update_siblings_with("lww", |siblings| {
            Ok(resolve::last_written(siblings).unwrap_or_default())
        })
        .send()
        .await
        .unwrap();
    let read = client.get_with("lww").r(3).send().await.unwrap();
    assert_eq!(read.values, vec![b"b-later".to_vec()]);
    // The resolved value is a new write: its time is the update's, after both puts.
    assert!(read.written_at[0] >= windows[1].2 - Duration::from_millis(1));
    client.close().await;
}

/// Typed values (the SDK's `serde` feature): written and read back as a type, concurrent
/// typed writes resolved with `update_json`, and a raw value that is not JSON is a typed
/// codec error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip_and_resolve_as_their_type() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Profile {
        name: String,
        visits: u64,
    }
    let cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    let ada = Profile {
        name: "Ada".into(),
        visits: 1,
    };
    client.put_json("profile", &ada, None).await.unwrap();
    let read = client.get_json::<Profile>("profile").await.unwrap();
    assert_eq!(read.values, [ada]);
    // Two blind writes make siblings; update_json resolves them as Profiles.
    for visits in [5, 7] {
        let p = Profile {
            name: "Ada".into(),
            visits,
        };
        client.put_json("profile", &p, None).await.unwrap();
    }
    assert_eq!(
        client
            .get_json::<Profile>("profile")
            .await
            .unwrap()
            .values
            .len(),
        3
    );
    client
        .update_json("profile", |siblings: Vec<Profile>| Profile {
            name: "Ada".into(),
            visits: siblings.iter().map(|p| p.visits).max().unwrap_or(0) + 1,
        })
        .await
        .unwrap();
    let read = client.get_json::<Profile>("profile").await.unwrap();
    assert_eq!(
        read.values,
        [Profile {
            name: "Ada".into(),
            visits: 8
        }]
    );
    client.put("raw", "not json").await.unwrap();
    assert!(matches!(
        client.get_json::<Profile>("raw").await,
        Err(shoal_client::ClientError::Codec(_))
    ));
    client.close().await;
}

/// The p99 of `samples` (the largest for fewer than 100).
fn p99(samples: &mut [std::time::Duration]) -> std::time::Duration {
    samples.sort();
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    samples[rank - 1]
}

/// With one node of five killed, a fresh client (as every CLI invocation is) must not
/// wait its whole connect timeout (3 s by default), neither to connect when the dead node
/// is its first seed, nor for a key whose first choice is the dead node: it races the
/// next candidate after `race_delay`, for connect, gets and puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_does_not_cost_a_fresh_client_its_connect_timeout() {
    fresh_clients_with_a_dead_node(false).await;
}

/// As above, with the dead node the first seed of the client's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_seed_does_not_cost_a_fresh_client_its_connect_timeout() {
    fresh_clients_with_a_dead_node(true).await;
}

/// Kills one node of five (the first seed, or another), then connects a fresh client for
/// each put and each get of 20 keys, and bounds the p99 of connect, get and put.
async fn fresh_clients_with_a_dead_node(first_seed_dies: bool) {
    let mut cluster = Cluster::start(5, "").await;
    let mut config = cluster.client_config();
    config.connect_timeout = shoal_client::DEFAULT_CONNECT_TIMEOUT;
    let first_seed = config.seeds[0].clone();
    let seed_node = cluster
        .nodes()
        .iter()
        .position(|n| shoal_client::Seed::Addr(n.addr) == first_seed)
        .expect("the first seed is a node of the cluster");
    let victim = if first_seed_dies {
        seed_node
    } else {
        (seed_node + 2) % cluster.len()
    };
    cluster.kill(victim);
    let dead = cluster.nodes()[victim].addr;
    let (mut gets, mut puts, mut connects, mut led_by_dead) = (vec![], vec![], vec![], 0);
    for i in 0..20 {
        let key = format!("race-{i}");
        let start = std::time::Instant::now();
        let client = crate::harness::connect(config.clone()).await;
        connects.push(start.elapsed());
        let info = client.cluster_info().await;
        let first = &info.ring.preference_list_for_key(key.as_bytes(), 3).nodes[0];
        if info
            .members
            .iter()
            .any(|m| &m.id == first && m.addr == dead)
        {
            led_by_dead += 1;
        }
        let start = std::time::Instant::now();
        client
            .put(&key, "v")
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        puts.push(start.elapsed());
        client.close().await;
        let client = crate::harness::connect(config.clone()).await;
        let start = std::time::Instant::now();
        client
            .get(&key)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        gets.push(start.elapsed());
        client.close().await;
    }
    assert!(
        led_by_dead > 0,
        "no key had the dead node first; pick others"
    );
    let (get_p99, put_p99) = (p99(&mut gets), p99(&mut puts));
    let connect_p99 = p99(&mut connects);
    eprintln!(
        "one of 5 nodes dead (first seed: {first_seed_dies}), fresh client per request, {led_by_dead} of 20 \
         keys led by it: connect p99 {connect_p99:?}, get p99 {get_p99:?} (max {:?}), \
         put p99 {put_p99:?} (max {:?})",
        gets.last().unwrap(),
        puts.last().unwrap()
    );
    let bound = std::time::Duration::from_secs(1);
    assert!(connect_p99 < bound, "connect p99 {connect_p99:?}");
    assert!(get_p99 < bound, "get p99 {get_p99:?}");
    assert!(put_p99 < bound, "put p99 {put_p99:?}");
}

/// Every example in `client/examples/` builds and runs to success against a real
/// cluster, printing what it promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_example_runs_against_a_cluster() {
    use std::time::Duration;
    use tokio::process::Command;
    let build = tokio::time::timeout(
        Duration::from_secs(600),
        Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "shoal-client",
                "--features",
                "serde",
                "--examples",
            ])
            .current_dir(crate::harness::repo_root())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("building the examples took more than 10 minutes")
    .expect("running cargo");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // This test binary is target/<profile>/deps/process-*; the examples are in
    // target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    let cluster = Cluster::start(3, "").await;
    let config = cluster.dir().join("client.toml");
    for (name, expect) in [
        ("hello", "hello = world"),
        ("shopping_cart", "cart: apples, bread, eggs, milk"),
        ("typed", "visits: 3"),
        ("retry", "written"),
        ("session", "session read: Ada"),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(examples.join(name))
                .arg(&config)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("example {name} ran for more than 60 s"))
        .unwrap_or_else(|e| panic!("running example {name}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "example {name} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expect), "example {name} printed {stdout}");
    }
}

/// A session reads its own writes while a replica that missed them serves reads.
///
/// Three nodes (every node a replica of every key), hinted handoff off: node C is killed,
/// writes are acknowledged by the other two (W = 2), and C comes back without them. A
/// read at R = 1 coordinated by C answers from C's own empty copy when C's store answers
/// before a peer's (printed, not asserted, for keys of a plain client read on C directly:
/// 3 to 11 of 12 here; which reply comes first is timing). The session's reads at R = 1 rotate over the replicas
/// like any read; those that C coordinates do not cover the session's write, so the
/// session asks two replicas and sees it: every session read returns its value. With
/// the session's coverage check disabled, this test failed (`session read of session-4
/// missed its own write`, two runs of two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_writes_through_a_replica_that_missed_them() {
    use shoal_client::{ReadOptions, WriteOptions};
    use shoal_proto::wire::{
        decode_response, encode_request, ClientRequest, ClientResponse, Request, Response,
    };
    const KEYS: usize = 12;
    let mut cluster = Cluster::start(3, "[handoff]\nenabled = false\n").await;
    let lagging = 2;
    let lagging_id = cluster.id(lagging);
    cluster.kill(lagging);
    let client = cluster.client().await;
    let session = client.session();
    let led_by_others = |key: &str, info: &shoal_client::ClusterInfo| {
        info.ring.preference_list_for_key(key.as_bytes(), 3).nodes[0] != lagging_id
    };
    let info = client.cluster_info().await;
    let keys = |prefix: &'static str| {
        let info = info.clone();
        (0..200)
            .map(move |i| format!("{prefix}-{i}"))
            .filter(move |k| led_by_others(k, &info))
            .take(KEYS)
            .collect::<Vec<_>>()
    };
    let (session_keys, plain_keys) = (keys("session"), keys("plain"));
    for key in &session_keys {
        session
            .put_opts(key, key.clone(), None, WriteOptions::default().w(2))
            .await
            .unwrap_or_else(|e| panic!("session put {key}: {e}"));
    }
    for key in &plain_keys {
        client
            .put_with(key, key.clone())
            .w(2)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    cluster.restart(lagging).await;
    // Without a session, C answers a read at R = 1 from its own copy: stale.
    let endpoint = cluster.raw_client(shoal_transport::TransportConfig::default());
    let c_addr = cluster.nodes()[lagging].addr;
    let mut stale = 0;
    for key in &plain_keys {
        let request = ClientRequest::Get {
            key: key.clone().into_bytes(),
            options: shoal_proto::wire::ReadOptions {
                r: Some(1),
                ..Default::default()
            },
        };
        let bytes = endpoint
            .request(
                c_addr,
                None,
                encode_request(&Request::Client(request)),
                std::time::Duration::from_secs(15),
            )
            .await
            .expect("the restarted node answers");
        match decode_response(&bytes)
            .expect("a valid response")
            .unstamped()
        {
            Response::Client(ClientResponse::Get(reply)) => stale += usize::from(!reply.found),
            other => panic!("{other:?}"),
        }
    }
    endpoint.close().await;
    eprintln!("{stale} of {KEYS} plain reads at R = 1 through the lagging node were stale");
    // The session sees every one of its writes at R = 1, wherever its reads go.
    for _round in 0..3 {
        for key in &session_keys {
            let read = session
                .get_opts(key, ReadOptions::default().r(1))
                .await
                .unwrap_or_else(|e| panic!("session get {key}: {e}"));
            assert!(
                read.found && read.values.contains(&key.clone().into_bytes()),
                "session read of {key} missed its own write: {read:?}"
            );
        }
    }
    assert_eq!(session.evicted(), 0);
    client.close().await;
}

/// A client that keeps one frame in flight per node sends the rest of 200 concurrent
/// writes, and then reads, in batch frames: every write lands and every read sees its
/// value, and the nodes count the batches they served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_reads_and_writes_each_get_their_own_answer() {
    let cluster = Cluster::start(3, "").await;
    let mut config = cluster.client_config();
    config.frames_per_node = 1;
    let client = crate::harness::connect(config).await;
    const KEYS: usize = 200;
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let client = client.clone();
        puts.spawn(async move {
            let key = format!("batched-{i}");
            client.put(&key, format!("value-{i}")).await.map(|_| key)
        });
    }
    while let Some(put) = puts.join_next().await {
        put.expect("a put task").expect("a batched put");
    }
    let mut gets = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let client = client.clone();
        gets.spawn(async move { (i, client.get(format!("batched-{i}")).await) });
    }
    while let Some(get) = gets.join_next().await {
        let (i, read) = get.expect("a get task");
        let read = read.expect("a batched get");
        assert_eq!(
            read.values,
            vec![format!("value-{i}").into_bytes()],
            "key {i}"
        );
    }
    assert_eq!(client.waiting_requests(), 0);
    let batches = cluster
        .metric_sum(&[0, 1, 2], "shoal_batched_client_requests_count", &[])
        .await
        .expect("scraping the nodes");
    let batched = cluster
        .metric_sum(&[0, 1, 2], "shoal_batched_client_requests_sum", &[])
        .await
        .expect("scraping the nodes");
    assert!(
        batches >= 1.0 && batched > batches,
        "{batches} batch frames carrying {batched} requests"
    );
    // The replicas merged most of the 400 copies in their request handlers, without
    // queueing them for their engines (each put waited for at least one such merge).
    let merged_in_handlers = cluster
        .metric_sum(
            &[0, 1, 2],
            "shoal_handler_replica_merges_total",
            &[("outcome", "served")],
        )
        .await
        .expect("scraping the nodes");
    assert!(
        merged_in_handlers >= KEYS as f64,
        "replica writes merged by the handlers: {merged_in_handlers}"
    );
    client.close().await;
}

/// Reads at R = 2 ask two primaries for their own copies at once. Copies that agree
/// answer without a coordinator; when one primary missed a write (it was down, with
/// anti-entropy off and hint delivery far off), every read still returns the write: the
/// other copy includes the stale one, so it answers, and the client's background read
/// through a coordinator repairs the stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_never_answer_a_copy_that_missed_a_write() {
    // Nothing but read repair brings n3's copy back: no anti-entropy, and the first
    // hint delivery round at a random time within 10,000 hours.
    let quiet = "[aae]\nenabled = false\n[handoff]\ninterval = \"10000h\"";
    let mut cluster = Cluster::start(3, quiet).await;
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let (n1, n3) = (cluster.id(0), cluster.id(2));
    let key = (0..10_000)
        .map(|i| format!("direct-{i}"))
        .find(|k| {
            ring.preference_list_for_key(k.as_bytes(), 3).nodes[..2] == [n1.clone(), n3.clone()]
        })
        .expect("a key whose first primaries are n1 and n3");
    let first = client
        .put_with(&key, "v1")
        .w(3)
        .send()
        .await
        .expect("v1 on every replica");

    let (gets, copies) = (
        served(&cluster, "get").await,
        served(&cluster, "get_replica").await,
    );
    for _ in 0..5 {
        assert_eq!(
            client.get(&key).await.expect("a read").values,
            vec![b"v1".to_vec()]
        );
    }
    assert_eq!(
        served(&cluster, "get").await,
        gets,
        "agreeing copies need no coordinator"
    );
    assert!(served(&cluster, "get_replica").await >= copies + 10.0);
    // Answered by the nodes' request handlers from memory, not queued for the engine.
    let from_memory = cluster
        .metric_sum(
            &[0, 1, 2],
            "shoal_handler_replica_reads_total",
            &[("outcome", "served")],
        )
        .await
        .expect("scraping the nodes");
    assert!(
        from_memory >= 10.0,
        "the handlers served the copies: {from_memory}"
    );

    // n3 misses v2: it is down while n1 coordinates the write with n2, and stays down
    // until the copy sent to it has failed and become a hint (kept, never delivered).
    // Restarted earlier, it would get the copy: a request in flight to its previous
    // process is reset by the new one and a replica write is sent again.
    cluster.kill(2);
    client
        .put_with(&key, "v2")
        .context(&first)
        .send()
        .await
        .expect("v2 on n1 and n2");
    let reporters = cluster.ids(&[0, 1]);
    wait_until("a hint for n3", Duration::from_secs(30), || async {
        let hints = pending_hints(&client, &reporters).await?;
        match hints.keys().any(|(_, target)| *target == n3) {
            true => Ok(()),
            false => Err(format!("pending hints: {hints:?}")),
        }
    })
    .await;
    cluster.restart(2).await;
    // A new client: the old one's connection to n3 died with it (a read over it would
    // fail and go through a coordinator for that reason alone).
    client.close().await;
    let client = cluster.client().await;

    assert_eq!(
        copy_on(&cluster, 2, &key).await,
        vec![b"v1".to_vec()],
        "n3 restarted with the copy it had"
    );

    // The client spreads its reads through coordinators over the key's primaries in
    // turn: two reads of another key make its next one start at the third, n2, whose
    // R = 2 copies (its own and n1's) agree, so that a repairing read through it would
    // leave n3 behind.
    for _ in 0..2 {
        client
            .get_with("another key")
            .r(1)
            .send()
            .await
            .expect("a read through a coordinator");
    }
    // n3's copy is behind n1's, whose context includes it: the read is answered with
    // n1's copy at once (what a coordinator's merge of the two is), and the client's
    // background read through n3, the node behind, repairs it.
    let gets = served(&cluster, "get").await;
    let read = client.get(&key).await.expect("a read");
    assert_eq!(read.values, vec![b"v2".to_vec()], "never n3's stale copy");
    wait_until("n3's copy repaired", Duration::from_secs(30), || async {
        match copy_on(&cluster, 2, &key).await {
            copy if copy == vec![b"v2".to_vec()] => Ok(()),
            copy => Err(format!("n3 holds {copy:?}")),
        }
    })
    .await;
    assert!(
        served(&cluster, "get").await > gets,
        "the repair went through a coordinator"
    );
    for _ in 0..3 {
        assert_eq!(
            client.get(&key).await.expect("a read").values,
            vec![b"v2".to_vec()]
        );
    }
    client.close().await;
}

/// The values of node `i`'s own copy of `key` (a replica read, as the SDK's direct reads
/// send it).
async fn copy_on(cluster: &Cluster, i: usize, key: &str) -> Vec<Vec<u8>> {
    let endpoint = cluster.raw_client(TransportConfig::default());
    let frame = encode_request(&Request::Client(ClientRequest::GetReplica {
        key: key.as_bytes().to_vec(),
    }));
    let bytes = endpoint
        .request(cluster.nodes()[i].addr, None, frame, RAW_REQUEST_TIMEOUT)
        .await
        .expect("an answer to the replica read");
    endpoint.close().await;
    match decode_response(&bytes).expect("a decodable answer") {
        Response::Stamped { response, .. } | Response::Client(response) => match response {
            ClientResponse::Replica(copy) => copy.get.values,
            other => panic!("expected a copy, got {other:?}"),
        },
        other => panic!("expected a client answer, got {other:?}"),
    }
}

/// Client requests `op` the nodes of `cluster` served, over all of them.
async fn served(cluster: &Cluster, op: &str) -> f64 {
    cluster
        .metric_sum(&[0, 1, 2], "shoal_requests_total", &[("op", op)])
        .await
        .expect("scraping the nodes")
}
