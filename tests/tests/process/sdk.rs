//! The SDK's helpers against a real cluster: read-modify-write under concurrent updaters.

use std::collections::BTreeSet;

use shoal_client::resolve;

use crate::harness::Cluster;

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
