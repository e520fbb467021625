//! `shoal cluster ...` and `shoal dev add`, the real binary against a real node: exit
//! codes (0 done, 1 refused by the cluster or unreachable, 2 usage), the documented JSON of
//! `status`, and the refusals' text.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{free_port_block, shoal, Cluster, Run};

/// Longest a CLI command may run (its own timeouts are far shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

async fn cli(node: &Cluster, args: &[&str]) -> Run {
    node.cli(args, None, COMMAND_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn run_shoal(args: &[&str]) -> Run {
    shoal(args, None, COMMAND_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A refused layout change: exit 1, the layout error on stderr, nothing on stdout.
fn assert_refused(run: &Run, what: &str) {
    assert_eq!(run.code(), Some(1), "{what}: {run:#?}");
    assert!(
        run.stderr.starts_with("error: layout change refused: "),
        "{what}: {run:#?}"
    );
    assert!(run.stdout.is_empty(), "{what}: {run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_exit_zero_one_or_two_and_status_has_the_documented_json() {
    let node = Cluster::start(1, "").await;

    // status --json: one line, version 1, the member with its state and partitions.
    let status = cli(&node, &["cluster", "status", "--json"]).await.ok();
    assert_eq!(status.stdout.lines().count(), 1, "{status:#?}");
    let json = status.json();
    assert_eq!(json["version"], 1, "{json}");
    let members = json["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{json}");
    assert_eq!(members[0]["id"], "n1");
    assert_eq!(members[0]["addr"], node.nodes()[0].addr.to_string());
    assert_eq!(members[0]["state"], "active");
    assert_eq!(members[0]["partitions"], 64);
    for field in ["pending", "running", "done", "bytes_left"] {
        assert!(json["transfers"][field].is_u64(), "{field}: {json}");
    }
    assert_eq!(json["transfers"]["pending"], 0, "nothing moves: {json}");
    // Summed over the members, each listed with its own.
    let by_node = json["transfers"]["by_node"].as_array().expect("by_node");
    assert_eq!(by_node.len(), 1, "{json}");
    assert_eq!(by_node[0]["node"], "n1", "{json}");
    assert_eq!(by_node[0]["done"], 0, "{json}");

    // The human form: the version line, then the member table.
    let table = cli(&node, &["cluster", "status"]).await.ok();
    assert!(
        table.stdout.starts_with("layout version 1 of cluster "),
        "{table:#?}"
    );
    assert!(table.stdout.contains("\nNODE "), "{table:#?}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.split_whitespace().take(3).eq([
                "n1",
                &node.nodes()[0].addr.to_string(),
                "active"
            ])),
        "{table:#?}"
    );

    // Nothing staged: plan is refused with the layout's reason.
    assert_refused(&cli(&node, &["cluster", "plan"]).await, "plan");
    assert_refused(
        &cli(&node, &["cluster", "plan", "--json"]).await,
        "plan --json",
    );

    // A commit on a version that is not the current one: refused, naming the current one.
    let commit = cli(&node, &["cluster", "commit", "--version", "99"]).await;
    assert_refused(&commit, "commit --version 99");
    assert!(
        commit.stderr.contains("layout is at version 1"),
        "names the current version: {commit:#?}"
    );

    // Changes this one-node cluster must refuse: an id that never contacted it, its only
    // member leaving or removed (fewer than N would remain), a live member replaced.
    for args in [
        &["cluster", "join", "n9"][..],
        &["cluster", "leave", "n1"],
        &["cluster", "remove", "n1"],
        &["cluster", "replace", "n1", "n9"],
    ] {
        assert_refused(&cli(&node, args).await, &args.join(" "));
    }

    // Unstaging nothing: refused by an engine without layout changes, else nothing is
    // staged afterwards.
    let unstage = cli(&node, &["cluster", "unstage", "--json"]).await;
    match unstage.code() {
        Some(0) => assert_eq!(unstage.json(), serde_json::json!({"staged": []})),
        _ => assert_refused(&unstage, "unstage"),
    }

    // Usage errors exit 2 before anything is sent.
    for args in [
        &["cluster"][..],
        &["cluster", "frobnicate"],
        &["cluster", "join"],
        &["cluster", "join", "n9", "--weight", "0"],
        &["cluster", "join", "bad id!"],
        &["cluster", "leave"],
        &["cluster", "remove", ""],
        &["cluster", "replace", "n1"],
        &["cluster", "replace", "n1", "n1"],
        &["cluster", "commit"],
        &["cluster", "commit", "--version", "latest"],
        &["cluster", "commit", "--version", "1", "--plan", "not-hex"],
        &["cluster", "commit", "--version", "1", "--plan"],
    ] {
        let run = cli(&node, args).await;
        assert_eq!(run.code(), Some(2), "{args:?}: {run:#?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
    }
    // The state of the cluster did not change.
    let after = cli(&node, &["cluster", "status", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(after["version"], 1);
    assert_eq!(after["staged"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_exit_one_when_no_node_answers_and_two_without_a_config() {
    let root = tempfile::tempdir().unwrap();
    let node = Cluster::start(1, "").await;
    // The cluster's client config, beside it (its TLS paths are relative), pointed at a
    // port nobody listens on.
    let text = std::fs::read_to_string(node.dir().join("client.toml")).unwrap();
    let dead = format!("127.0.0.1:{}", free_port_block(1));
    let text = text.replace(&node.nodes()[0].addr.to_string(), &dead);
    let config = node.dir().join("dead.toml");
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    for args in [
        &["status", "--json"][..],
        &["plan"],
        &["commit", "--version", "1"],
    ] {
        let mut all = vec!["--config", config, "cluster"];
        all.extend_from_slice(args);
        let run = run_shoal(&all).await;
        assert_eq!(run.code(), Some(1), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains("no node reachable"),
            "{args:?}: {run:#?}"
        );
    }
    let missing = root.path().join("nothing.toml");
    let run = run_shoal(&["--config", missing.to_str().unwrap(), "cluster", "status"]).await;
    assert_eq!(run.code(), Some(2), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_add_writes_the_next_node_and_prints_its_id() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let dir_str = dir.to_str().unwrap();
    let base = free_port_block(6);
    let (quic, metrics) = (base.to_string(), (base + 3).to_string());
    run_shoal(&[
        "dev",
        "init",
        "--dir",
        dir_str,
        "--nodes",
        "3",
        "--base-port",
        &quic,
        "--metrics-base-port",
        &metrics,
    ])
    .await
    .ok();

    // The id alone on stdout, what to do next on stderr.
    let first = run_shoal(&["dev", "add", "--dir", dir_str]).await.ok();
    assert_eq!(first.stdout, "n4\n", "{first:#?}");
    assert!(first.stderr.contains("cluster join n4"), "{first:#?}");
    let config = dir.join("n4").join("node.toml");
    for file in ["node.toml", "node.pem", "node.key"] {
        assert!(dir.join("n4").join(file).is_file(), "{file}");
    }
    let text = std::fs::read_to_string(&config).unwrap();
    // `key = "value"` lines, in order (the seeds' ids follow the node's own).
    let values = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .map(|v| v.trim_end_matches('"').to_owned())
            .collect()
    };
    assert_eq!(
        values("id"),
        ["n4", "n1", "n2", "n3"],
        "the existing nodes seed it, not itself: {text}"
    );
    assert_eq!(text.matches("[[seeds]]").count(), 3, "{text}");
    // --json: one object; a second add is another node with other ports.
    let second: Value = run_shoal(&["dev", "add", "--dir", dir_str, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(second["event"], "add");
    assert_eq!(second["id"], "n5");
    assert_eq!(
        second["config"],
        serde_json::json!(dir.join("n5").join("node.toml"))
    );
    assert_eq!(second["seeds"].as_array().unwrap().len(), 4, "{second}");
    let port_of = |addr: &str| addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut ports: Vec<u16> = (base..base + 6).collect();
    ports.push(port_of(&values("listen")[0]));
    ports.push(port_of(&values("metrics_listen")[0]));
    ports.push(port_of(second["quic"].as_str().unwrap()));
    ports.push(port_of(
        second["metrics"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches("/metrics"),
    ));
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "every port distinct: {ports:?}"
    );

    // Outside a dev cluster: a usage error, nothing written.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = run_shoal(&["dev", "add", "--dir", empty.to_str().unwrap()]).await;
    assert_eq!(run.code(), Some(2), "{run:#?}");
    assert!(std::fs::read_dir(&empty).unwrap().next().is_none());
}
