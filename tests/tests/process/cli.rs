//! The real `shoal` binary: client commands against a one-node cluster (their output
//! formats and exit codes), `shoal node`'s configuration checks, and `shoal dev`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

use crate::harness::{
    free_port_block, log_tail, process_alive, shoal, spawn_logged, wait_exit, wait_until, Cluster,
    Run, BIN, EXIT_TIMEOUT, LOG_TAIL_LINES, START_TIMEOUT,
};

/// Longest a CLI command may run (its own timeouts are far shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The value limit the test node is configured with.
const MAX_VALUE_BYTES: usize = 1024;

/// Runs `shoal ARGS` with `stdin` (none: /dev/null); panics if it cannot run or takes
/// over [`COMMAND_TIMEOUT`].
async fn run_shoal(args: &[&str], stdin: Option<&[u8]>) -> Run {
    shoal(args, stdin, COMMAND_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `shoal --config CLIENT ARGS` against the one-node cluster `node`.
async fn cli(node: &Cluster, args: &[&str]) -> Run {
    cli_stdin(node, args, None).await
}

async fn cli_stdin(node: &Cluster, args: &[&str], stdin: Option<&[u8]>) -> Run {
    node.cli(args, stdin, COMMAND_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks that the node still runs and serves: a put and a get of a fresh key succeed.
async fn assert_serving(node: &mut Cluster, key: &str) {
    assert!(node.is_running(0), "the node process exited");
    cli(node, &["put", key, "still-serving"]).await.ok();
    let read = cli(node, &["get", key, "--json"]).await.ok().json();
    assert_eq!(read["values"], serde_json::json!(["still-serving"]));
}

/// The node's config with a small value limit.
fn small_limits() -> String {
    format!("\n[limits]\nmax_value_bytes = {MAX_VALUE_BYTES}\n")
}

fn values(run: &Run) -> Vec<String> {
    let json = run.json();
    let mut values: Vec<String> = json["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values array: {run:#?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_round_trip_with_json_output_siblings_and_contexts() {
    let node = Cluster::start(1, "").await;

    // put prints the new context alone on one line.
    let put = cli(&node, &["put", "greeting", "hello"]).await.ok();
    let put_ctx = put.stdout.trim().to_owned();
    assert_eq!(put.stdout.lines().count(), 1, "{put:#?}");
    assert!(!put_ctx.is_empty());

    // put and delete --json: one object holding the context alone.
    let put = cli(&node, &["put", "json-key", "v", "--json"])
        .await
        .ok()
        .json();
    let ctx = put["context"]
        .as_str()
        .expect("a context string")
        .to_owned();
    assert_eq!(put.as_object().unwrap().len(), 1, "{put}");
    let del = cli(&node, &["delete", "json-key", "--context", &ctx, "--json"])
        .await
        .ok()
        .json();
    assert!(del["context"].is_string(), "{del}");
    assert_eq!(del.as_object().unwrap().len(), 1, "{del}");
    let gone = cli(&node, &["get", "json-key", "--json"]).await.ok().json();
    assert_eq!(gone["found"], Value::Bool(false), "{gone}");

    // get --json: one object with values, context and found.
    let get = cli(&node, &["get", "greeting", "--json"]).await.ok();
    assert_eq!(get.stdout.lines().count(), 1, "{get:#?}");
    let json = get.json();
    assert_eq!(json["found"], Value::Bool(true));
    assert_eq!(json["values"], serde_json::json!(["hello"]));
    let ctx = json["context"]
        .as_str()
        .expect("context is a string")
        .to_owned();
    // When the value was written: one RFC 3339 time per value.
    let written_at = json["written_at"].as_array().expect("written_at is a list");
    assert_eq!(written_at.len(), 1, "{json}");
    let at = written_at[0].as_str().expect("a time string");
    humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert_eq!(
        json.as_object().unwrap().len(),
        4,
        "exactly values, context, found and written_at: {json}"
    );

    // The plain form: values, then the context line.
    let plain = cli(&node, &["get", "greeting"]).await.ok();
    assert_eq!(plain.stdout, format!("hello\ncontext: {ctx}\n"));

    // A missing key: found = false, no values, exit status 0.
    let missing = cli(&node, &["get", "nobody-wrote-this", "--json"]).await;
    assert_eq!(missing.code(), Some(0), "{missing:#?}");
    let json = missing.json();
    assert_eq!(json["found"], Value::Bool(false));
    assert_eq!(json["values"], serde_json::json!([]));
    let missing_plain = cli(&node, &["get", "nobody-wrote-this"]).await.ok();
    assert!(
        missing_plain.stdout.starts_with("not found\n"),
        "{missing_plain:#?}"
    );

    // Two puts without context: two siblings.
    cli(&node, &["put", "pair", "left"]).await.ok();
    cli(&node, &["put", "pair", "right"]).await.ok();
    let both = cli(&node, &["get", "pair", "--json"]).await.ok();
    assert_eq!(values(&both), ["left", "right"]);

    // A put with the context of that get replaces both: one value.
    let both_ctx = both.json()["context"].as_str().unwrap().to_owned();
    cli(&node, &["put", "pair", "resolved", "--context", &both_ctx])
        .await
        .ok();
    let one = cli(&node, &["get", "pair", "--json"]).await.ok();
    assert_eq!(values(&one), ["resolved"]);

    // The context a put printed works the same way.
    cli(&node, &["put", "greeting", "hi", "--context", &put_ctx])
        .await
        .ok();
    assert_eq!(
        values(&cli(&node, &["get", "greeting", "--json"]).await.ok()),
        ["hi"]
    );

    // delete with the context of a read: the key is gone.
    let one_ctx = one.json()["context"].as_str().unwrap().to_owned();
    let deleted = cli(&node, &["delete", "pair", "--context", &one_ctx])
        .await
        .ok();
    assert_eq!(deleted.stdout.lines().count(), 1, "{deleted:#?}");
    let gone = cli(&node, &["get", "pair", "--json"]).await.ok().json();
    assert_eq!(gone["found"], Value::Bool(false));
    assert_eq!(gone["values"], serde_json::json!([]));

    // delete without a context: the node reads first and deletes every sibling it finds
    // (a tombstone with an empty context would cover nothing and leave them).
    cli(&node, &["put", "twins", "one"]).await.ok();
    cli(&node, &["put", "twins", "two"]).await.ok();
    let deleted = cli(&node, &["delete", "twins"]).await.ok();
    assert_eq!(deleted.stdout.lines().count(), 1, "{deleted:#?}");
    let gone = cli(&node, &["get", "twins", "--json"]).await.ok().json();
    assert_eq!(gone["found"], Value::Bool(false), "{gone}");

    // A value from stdin (`-`), bytes exactly as given, trailing newline included.
    cli_stdin(
        &node,
        &["put", "from-stdin", "-"],
        Some(b"line one\nline two\n"),
    )
    .await
    .ok();
    let read = cli(&node, &["get", "from-stdin", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(read["values"], serde_json::json!(["line one\nline two\n"]));

    // Binary values: --base64 prints them faithfully, plain JSON refuses them.
    let binary = [0u8, 159, 146, 150, 0xff, b'\n', 0xfe];
    cli_stdin(&node, &["put", "binary", "-"], Some(&binary))
        .await
        .ok();
    let b64 = cli(&node, &["get", "binary", "--base64"]).await.ok();
    assert_eq!(
        b64.stdout.lines().next(),
        Some(BASE64.encode(binary).as_str())
    );
    let b64_json = cli(&node, &["get", "binary", "--json", "--base64"])
        .await
        .ok()
        .json();
    assert_eq!(
        b64_json["values"],
        serde_json::json!([BASE64.encode(binary)])
    );
    let refused = cli(&node, &["get", "binary", "--json"]).await;
    assert_ne!(refused.code(), Some(0), "{refused:#?}");
    assert!(refused.stderr.contains("--base64"), "{refused:#?}");

    // status --json lists the one member, up, without hints.
    let status = cli(&node, &["status", "--json"]).await.ok().json();
    assert_eq!(status["node"], "n1");
    assert_eq!(status["members"][0]["state"], "up");
    assert_eq!(status["members"][0]["pending_hints"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_key_and_value_exit_one_with_the_typed_error_and_the_node_keeps_serving() {
    let mut node = Cluster::start(1, &small_limits()).await;

    let long_key = "k".repeat(4097);
    let run = cli(&node, &["put", &long_key, "v"]).await;
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("error: key is 4097 bytes, the limit is 4096"),
        "{run:#?}"
    );
    let run = cli(&node, &["get", &long_key]).await;
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(run.stderr.contains("key is 4097 bytes"), "{run:#?}");
    assert_serving(&mut node, "after-long-key").await;

    let big = vec![b'x'; MAX_VALUE_BYTES + 1];
    let run = cli_stdin(&node, &["put", "big", "-"], Some(&big)).await;
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "error: value is {} bytes, the limit is {MAX_VALUE_BYTES}",
            MAX_VALUE_BYTES + 1
        )),
        "{run:#?}"
    );
    let read = cli(&node, &["get", "big", "--json"]).await.ok().json();
    assert_eq!(
        read["found"],
        Value::Bool(false),
        "a refused value was stored"
    );
    // Exactly the limit is accepted.
    let fits = vec![b'y'; MAX_VALUE_BYTES];
    cli_stdin(&node, &["put", "big", "-"], Some(&fits))
        .await
        .ok();
    assert_serving(&mut node, "after-big-value").await;
}

/// A directory holding the printed default config and dummy TLS files next to it (the
/// config check only needs them to exist).
async fn default_config_dir() -> (tempfile::TempDir, String) {
    let run = run_shoal(&["node", "--print-default-config"], None)
        .await
        .ok();
    let dir = tempfile::tempdir().unwrap();
    for file in ["ca.pem", "node.pem", "node.key"] {
        std::fs::write(dir.path().join(file), "dummy").unwrap();
    }
    (dir, run.stdout)
}

/// `text` with `from` replaced by `to`; panics if `from` is not there, so that a change
/// of the default config cannot silently turn a case into a no-op.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the default config has no {from:?}");
    text.replacen(from, to, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_default_config_loads_and_validates() {
    let (dir, text) = default_config_dir().await;
    let path = dir.path().join("node.toml");
    std::fs::write(&path, &text).unwrap();
    let config = shoal_node::NodeConfig::load(&path).expect("the default config loads");
    config.validate().expect("the default config validates");
    assert_eq!(config.id.as_str(), "n1");
    assert_eq!(config.seeds.len(), 1);
    assert_eq!(config.base_dir, dir.path());
    assert_eq!(config.resolve(&config.tls.ca), dir.path().join("ca.pem"));
    assert_eq!(
        config.ring().expect("a ring").partition_count(),
        config.partitions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fields_make_shoal_node_exit_two_naming_the_field() {
    let (dir, text) = default_config_dir().await;
    let three_seeds = edit(
        &text,
        "[[seeds]]\nid = \"n1\"\naddr = \"127.0.0.1:7001\"\n",
        "[[seeds]]\nid = \"n1\"\naddr = \"127.0.0.1:7001\"\n\
         [[seeds]]\nid = \"n2\"\naddr = \"127.0.0.1:7002\"\n\
         [[seeds]]\nid = \"n3\"\naddr = \"127.0.0.1:7003\"\n",
    );
    // Sanity: with three seeds and N = 3 the quorums are fine, so only `w` is wrong below.
    let good3 = edit(
        &three_seeds,
        "n = 1\nr = 1\nw = 1\n",
        "n = 3\nr = 2\nw = 2\n",
    );
    std::fs::write(dir.path().join("good3.toml"), &good3).unwrap();
    shoal_node::NodeConfig::load(&dir.path().join("good3.toml")).expect("three-node config");

    let cases = [
        (
            "w-above-n",
            edit(
                &three_seeds,
                "n = 1\nr = 1\nw = 1\n",
                "n = 3\nr = 2\nw = 5\n",
            ),
            vec!["replication.w", "5"],
        ),
        (
            "unknown-field",
            edit(
                &text,
                "partitions = 256\n",
                "partitions = 256\ncolour = \"red\"\n",
            ),
            vec!["colour"],
        ),
        (
            "bad-durability",
            edit(&text, "durability = \"buffered\"", "durability = \"fast\""),
            vec!["durability", "fast"],
        ),
        (
            "partitions-not-power-of-two",
            edit(&text, "partitions = 256\n", "partitions = 100\n"),
            vec!["partitions", "100"],
        ),
    ];
    for (name, config, expected) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let run = run_shoal(&["node", "--config", path.to_str().unwrap()], None).await;
        assert_eq!(run.code(), Some(2), "{name}: {run:#?}");
        for word in expected {
            assert!(run.stderr.contains(word), "{name}: no {word:?} in {run:#?}");
        }
    }

    let run = run_shoal(&["node"], None).await;
    assert_eq!(run.code(), Some(2), "{run:#?}");
    assert!(run.stderr.contains("--config"), "{run:#?}");
}

/// `shoal dev` and the node processes it started, killed on drop if still running.
struct DevGuard {
    dev: Option<Child>,
    nodes: Vec<i32>,
    dir: PathBuf,
}

impl Drop for DevGuard {
    fn drop(&mut self) {
        if let Some(mut dev) = self.dev.take() {
            let _ = dev.kill();
            let _ = dev.wait();
        }
        for &pid in &self.nodes {
            if process_alive(pid) {
                // SAFETY: a node process `shoal dev` (our child) started for this test;
                // checked alive just before.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- dev output and node log ({}) -----\n{}\n{}",
                self.dir.display(),
                std::fs::read_to_string(self.dir.join("dev.out")).unwrap_or_default(),
                log_tail(&self.dir.join("cluster/n1/node.log"), LOG_TAIL_LINES)
            );
        }
    }
}

impl DevGuard {
    /// Spawns `cmd` (a `shoal dev` running a one-node cluster) with its output in
    /// `root/dev.out`, and waits until it prints its node's pid.
    async fn start(cmd: Command, root: &std::path::Path) -> (DevGuard, i32) {
        let dev_out = root.join("dev.out");
        let mut guard = DevGuard {
            dev: Some(spawn_logged(cmd, &dev_out, "shoal dev")),
            nodes: Vec::new(),
            dir: root.to_path_buf(),
        };
        let node_pid = wait_node_pid(&mut guard, &dev_out).await;
        guard.nodes.push(node_pid);
        (guard, node_pid)
    }
}

/// Waits until the `shoal dev` of `guard` prints node n1's pid; panics if it exits first.
async fn wait_node_pid(guard: &mut DevGuard, dev_out: &std::path::Path) -> i32 {
    wait_until("`shoal dev` to print its node's pid", START_TIMEOUT, || {
        let out = std::fs::read_to_string(dev_out).unwrap_or_default();
        let pid = out
            .lines()
            .find(|l| l.starts_with("node n1"))
            .and_then(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "pid")?;
                words.next()?.parse::<i32>().ok()
            });
        if let Some(status) = guard.dev.as_mut().unwrap().try_wait().unwrap() {
            panic!("shoal dev exited with {status}: {out}");
        }
        std::future::ready(pid.ok_or_else(|| format!("no node pid printed: {out}")))
    })
    .await
}

/// `shoal dev init` of a one-node cluster in `dir` on a free port; returns the port.
async fn dev_init_one(dir: &str) -> u16 {
    let port = free_port_block(1);
    let port_str = port.to_string();
    run_shoal(
        &[
            "dev",
            "init",
            "--dir",
            dir,
            "--nodes",
            "1",
            "--base-port",
            &port_str,
            "--metrics-base-port",
            &port_str,
        ],
        None,
    )
    .await
    .ok();
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_refuses_nodes_that_differ_from_an_existing_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let dir = dir.to_str().unwrap();
    dev_init_one(dir).await;
    // Before the check, `up --nodes 2` ran the 1-node cluster until killed: a short
    // timeout turns that into a failure instead of a hang.
    for args in [
        vec!["dev", "up", "--dir", dir, "--nodes", "2"],
        vec!["dev", "--dir", dir, "--nodes", "3"],
    ] {
        let run = shoal(&args, None, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(run.code(), Some(2), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains("1-node") && run.stderr.contains("shoal dev clean"),
            "{args:?}: {run:#?}"
        );
    }
    assert!(!std::path::Path::new(dir).join("dev.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_down_stops_the_cluster_and_clean_removes_it_only_when_stopped() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let dir_str = dir.to_str().unwrap();
    dev_init_one(dir_str).await;
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "up", "--dir", dir_str, "--nodes", "1"]);
    let (mut guard, node_pid) = DevGuard::start(cmd, root.path()).await;

    // A running cluster is not removed.
    let refused = run_shoal(&["dev", "clean", "--dir", dir_str], None).await;
    assert_eq!(refused.code(), Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("shoal dev down"), "{refused:#?}");
    assert!(dir.join("client.toml").is_file());

    // `down` stops `shoal dev up` and with it the node.
    let down = run_shoal(&["dev", "down", "--dir", dir_str], None)
        .await
        .ok();
    assert!(down.stdout.contains("stopped"), "{down:#?}");
    let status = wait_exit(guard.dev.as_mut().unwrap(), EXIT_TIMEOUT, "shoal dev");
    guard.dev = None;
    assert!(status.success(), "shoal dev exited with {status}");
    wait_until("the node to stop with shoal dev", EXIT_TIMEOUT, || {
        std::future::ready(if process_alive(node_pid) {
            Err(format!("node {node_pid} still runs after shoal dev down"))
        } else {
            Ok(())
        })
    })
    .await;
    assert!(!dir.join("dev.pid").exists());
    let again = run_shoal(&["dev", "down", "--dir", dir_str], None)
        .await
        .ok();
    assert!(again.stdout.contains("no dev cluster runs"), "{again:#?}");

    // Stopped: `clean` removes the directory.
    let clean = run_shoal(&["dev", "clean", "--dir", dir_str], None)
        .await
        .ok();
    assert!(clean.stdout.contains("removed"), "{clean:#?}");
    assert!(!dir.exists());

    // A directory that is not a dev cluster is never removed.
    let other = root.path().join("not-a-cluster");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious"), "x").unwrap();
    let refused = run_shoal(&["dev", "clean", "--dir", other.to_str().unwrap()], None).await;
    assert_eq!(refused.code(), Some(2), "{refused:#?}");
    assert!(other.join("precious").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_runs_a_node_and_sigint_stops_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let port = free_port_block(1).to_string();
    let dev_out = root.path().join("dev.out");
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "--dir", dir.to_str().unwrap(), "--nodes", "1"])
        .args(["--base-port", &port, "--metrics-base-port", &port]);
    // `shoal dev` prints each node's pid, then serves until Ctrl-C.
    let (mut guard, node_pid) = DevGuard::start(cmd, root.path()).await;
    assert!(process_alive(node_pid));
    // It prints a node only once it serves: by then the node has logged so.
    let log = std::fs::read_to_string(dir.join("n1/node.log")).unwrap_or_default();
    assert!(
        log.contains("serving"),
        "node printed before it served: {log}"
    );

    // The dev cluster serves: put, then get, through its client config.
    let config = dir.join("client.toml");
    let config = config.to_str().unwrap();
    // `shoal dev` prints a node only once it serves: the first put succeeds.
    run_shoal(&["--config", config, "put", "dev-key", "dev-value"], None)
        .await
        .ok();
    let read = run_shoal(&["--config", config, "get", "dev-key", "--json"], None)
        .await
        .ok()
        .json();
    assert_eq!(read["values"], serde_json::json!(["dev-value"]));

    // SIGINT (Ctrl-C) stops `shoal dev` and its node.
    let dev_pid = i32::try_from(guard.dev.as_ref().unwrap().id()).unwrap();
    // SAFETY: a signal to our own unreaped child.
    assert_eq!(unsafe { libc::kill(dev_pid, libc::SIGINT) }, 0);
    let status = wait_exit(guard.dev.as_mut().unwrap(), EXIT_TIMEOUT, "shoal dev");
    guard.dev = None;
    assert!(status.success(), "shoal dev exited with {status}");
    wait_until("the node to stop with shoal dev", EXIT_TIMEOUT, || {
        std::future::ready(if process_alive(node_pid) {
            Err(format!(
                "node {node_pid} still runs after shoal dev stopped"
            ))
        } else {
            Ok(())
        })
    })
    .await;
    let out = std::fs::read_to_string(&dev_out).unwrap();
    assert!(out.contains("stopped"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_prints_the_key_s_partition_and_preference_list_from_the_ring() {
    let cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    client.refresh().await.unwrap();
    let info = client.cluster_info().await;
    client.close().await;
    assert_eq!(info.n, 3);

    for key in ["alpha", "beta", "gamma", "delta"] {
        let want = info.ring.preference_list_for_key(key.as_bytes(), 3);
        let json = cli(&cluster, &["locate", key, "--json"]).await.ok().json();
        assert_eq!(json["key"], key);
        assert_eq!(json["partition"], want.partition.0, "{json}");
        assert_eq!(json["ring_version"], info.ring.version(), "{json}");
        let replicas = json["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{json}");
        for (replica, id) in replicas.iter().zip(&want.nodes) {
            assert_eq!(replica["id"], id.as_str(), "{json}");
            let addr = info.members.iter().find(|m| &m.id == id).unwrap().addr;
            assert_eq!(replica["addr"], addr.to_string(), "{json}");
        }

        let text = cli(&cluster, &["locate", key]).await.ok().stdout;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "partition {} (ring version {}, N=3)",
                want.partition.0,
                info.ring.version()
            )
        );
        let ids: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        let want_ids: Vec<&str> = want.nodes.iter().map(|n| n.as_str()).collect();
        assert_eq!(ids, want_ids, "{text}");
    }

    let empty = cli(&cluster, &["locate", ""]).await;
    assert_eq!(empty.code(), Some(2), "{empty:#?}");
    assert!(empty.stderr.contains("empty"), "{empty:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_print_a_bash_script_naming_the_subcommands() {
    let run = run_shoal(&["completions", "bash"], None).await.ok();
    assert!(run.stdout.contains("complete -F"), "{run:#?}");
    for word in [
        "put", "get", "delete", "status", "locate", "dev", "clean", "down", "cert", "aae",
    ] {
        assert!(
            run.stdout
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w == word),
            "{word} missing from the bash completions"
        );
    }
    let bad = run_shoal(&["completions", "tcsh"], None).await;
    assert_eq!(bad.code(), Some(2), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_does_not_print_a_node_that_never_serves() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let dir_str = dir.to_str().unwrap();
    let port = dev_init_one(dir_str).await;
    // The node's QUIC port is taken: it exits at startup without ever serving.
    let _taken = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let run = run_shoal(&["dev", "up", "--dir", dir_str], None).await;
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(run.stderr.contains("before serving"), "{run:#?}");
    assert!(
        !run.stdout.contains("node n1"),
        "printed a node that never served: {run:#?}"
    );
    assert!(!dir.join("dev.pid").exists());
}

/// `shoal dev ARGS --json`, which must succeed: its one JSON line.
async fn dev_json(args: &[&str]) -> Value {
    let mut all = vec!["dev"];
    all.extend_from_slice(args);
    all.push("--json");
    run_shoal(&all, None).await.ok().json()
}

/// The last line of `dev.out` that is a JSON object with `"event": event`.
fn dev_event(dev_out: &std::path::Path, event: &str) -> Option<Value> {
    std::fs::read_to_string(dev_out)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_json_reports_every_step_as_one_json_object_per_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let dir_str = dir.to_str().unwrap();
    let port = free_port_block(1).to_string();
    let init = run_shoal(
        &[
            "dev",
            "init",
            "--json",
            "--dir",
            dir_str,
            "--nodes",
            "1",
            "--base-port",
            &port,
            "--metrics-base-port",
            &port,
        ],
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(
        init,
        serde_json::json!({
            "event": "init", "dir": dir, "nodes": ["n1"], "n": 1, "r": 1, "w": 1,
            "client_config": dir.join("client.toml"),
        })
    );
    assert_eq!(
        dev_json(&["down", "--dir", dir_str]).await,
        serde_json::json!({"event": "down", "dir": dir, "stopped": false})
    );

    let dev_out = root.path().join("dev.out");
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "up", "--json", "--dir", dir_str]);
    let mut guard = DevGuard {
        dev: Some(spawn_logged(cmd, &dev_out, "shoal dev")),
        nodes: Vec::new(),
        dir: root.path().to_path_buf(),
    };
    let up = wait_until("`shoal dev up --json` to report", START_TIMEOUT, || {
        std::future::ready(dev_event(&dev_out, "up").ok_or_else(|| "no up event yet".to_owned()))
    })
    .await;
    let node = &up["nodes"][0];
    assert_eq!(node["id"], "n1", "{up}");
    assert_eq!(node["quic"], format!("127.0.0.1:{port}"), "{up}");
    assert_eq!(
        up["client_config"],
        serde_json::json!(dir.join("client.toml"))
    );
    let node_pid = i32::try_from(node["pid"].as_i64().unwrap()).unwrap();
    guard.nodes.push(node_pid);
    assert!(process_alive(node_pid));

    assert_eq!(
        dev_json(&["down", "--dir", dir_str]).await,
        serde_json::json!({"event": "down", "dir": dir, "stopped": true})
    );
    let status = wait_exit(guard.dev.as_mut().unwrap(), EXIT_TIMEOUT, "shoal dev");
    guard.dev = None;
    assert!(status.success(), "shoal dev exited with {status}");
    assert_eq!(
        dev_event(&dev_out, "stopped"),
        Some(serde_json::json!({"event": "stopped"}))
    );

    for removed in [true, false] {
        assert_eq!(
            dev_json(&["clean", "--dir", dir_str]).await,
            serde_json::json!({"event": "clean", "dir": dir, "removed": removed})
        );
    }
}
