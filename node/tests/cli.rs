//! The real `shoal` binary: client commands against a one-node cluster (their output
//! formats and exit codes), `shoal node`'s configuration checks, and `shoal dev`.
//!
//! Every node runs as its own process on ports free at the time (below the ephemeral
//! range), in a temporary `shoal dev init` directory; a guard kills it at the end, also
//! when the test fails (then printing the tail of its log). Waiting is polling with a
//! deadline, never sleeping.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::Rng;
use serde_json::Value;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Longest a CLI command may run (its own timeouts are far shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The value limit the test node is configured with.
const MAX_VALUE_BYTES: usize = 1024;
/// Attempts to start a node when its port turns out to be taken.
const START_ATTEMPTS: usize = 3;
/// Lines of a node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Ports handed out in this process (tests run in parallel threads).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `count` consecutive ports free on 127.0.0.1 for both UDP (QUIC) and TCP (metrics),
/// drawn below the ephemeral range so that no port-0 socket can take one meanwhile.
fn free_port_block(count: u16) -> u16 {
    let mut rng = rand::rng();
    for _ in 0..500 {
        let base = rng.random_range(20_000..32_000 - count);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed = handed.get_or_insert_with(HashSet::new);
        if (base..base + count).any(|p| handed.contains(&p)) {
            continue;
        }
        let free = (base..base + count).all(|p| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
                && TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        });
        if free {
            handed.extend(base..base + count);
            return base;
        }
    }
    panic!("no free block of {count} ports");
}

/// The outcome of one CLI run.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the output unless the command exited 0.
    fn ok(self) -> Run {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Waits (bounded, polling) for `child` to exit; kills it past the deadline.
fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `shoal ARGS` with `stdin` (none: /dev/null), bounded by [`COMMAND_TIMEOUT`].
/// Output goes through files, so a chatty command can never block on a full pipe.
fn shoal(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(SHOAL);
    cmd.args(args)
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("starting shoal");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
        drop(pipe);
    }
    let status = wait_child(&mut child, COMMAND_TIMEOUT);
    Run {
        status,
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        stderr: std::fs::read_to_string(err.path()).unwrap(),
    }
}

/// A one-node dev cluster whose node runs as `shoal node`; killed on drop.
struct Node {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    /// `shoal dev init --nodes 1` on free ports, `extra_toml` appended to the node's
    /// config, the node started and answering `status`. When the node finds its port
    /// taken (by something that bound it after we found it free), it starts again on
    /// another port, a bounded number of times.
    fn start(extra_toml: &str) -> Node {
        for attempt in 1..=START_ATTEMPTS {
            let mut node = Node::spawn(extra_toml);
            match node.wait_ready() {
                Ok(()) => return node,
                Err(log) if attempt < START_ATTEMPTS && log.contains("Address already in use") => {
                    eprintln!("attempt {attempt}: the node's port was taken; retrying");
                }
                Err(log) => panic!("the node did not start; log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(extra_toml: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("shoal-cli-")
            .tempdir()
            .unwrap();
        let port = free_port_block(1).to_string();
        let d = dir.path().to_str().unwrap();
        shoal(
            &[
                "dev",
                "init",
                "--dir",
                d,
                "--nodes",
                "1",
                "--base-port",
                &port,
                "--metrics-base-port",
                &port,
            ],
            None,
        )
        .ok();
        let config = dir.path().join("n1").join("node.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(extra_toml);
        std::fs::write(&config, text).unwrap();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("n1").join("node.log"))
            .unwrap();
        let mut cmd = Command::new(SHOAL);
        cmd.arg("node")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the node dies with the test thread that
        // started it, so an aborted test run leaves no node behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Node {
            child: Some(cmd.spawn().expect("starting the node")),
            dir,
        }
    }

    fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    /// `shoal --config CLIENT ARGS`.
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_stdin(args, None)
    }

    fn cli_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let config = self.client_config();
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        shoal(&all, stdin)
    }

    /// Polls `shoal status` until it succeeds; `Err(log tail)` if the node exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                return Err(format!(
                    "exited with {status}\n{}",
                    log_tail(self.dir.path())
                ));
            }
            let run = self.cli(&["status", "--json"]);
            if run.status.success() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the node did not answer within {START_TIMEOUT:?}: {run:#?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the node process is still running (it did not crash).
    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Checks that the node still runs and serves: a put and a get of a fresh key succeed.
    fn assert_serving(&mut self, key: &str) {
        assert!(self.is_running(), "the node process exited");
        self.cli(&["put", key, "still-serving"]).ok();
        let read = self.cli(&["get", key, "--json"]).ok().json();
        assert_eq!(read["values"], serde_json::json!(["still-serving"]));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- node log ({}) -----\n{}",
                self.dir.path().display(),
                log_tail(self.dir.path())
            );
        }
    }
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("n1").join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
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

#[test]
fn client_commands_round_trip_with_json_output_siblings_and_contexts() {
    let node = Node::start("");

    // put prints the new context alone on one line.
    let put = node.cli(&["put", "greeting", "hello"]).ok();
    let put_ctx = put.stdout.trim().to_owned();
    assert_eq!(put.stdout.lines().count(), 1, "{put:#?}");
    assert!(!put_ctx.is_empty());

    // get --json: one object with values, context and found.
    let get = node.cli(&["get", "greeting", "--json"]).ok();
    assert_eq!(get.stdout.lines().count(), 1, "{get:#?}");
    let json = get.json();
    assert_eq!(json["found"], Value::Bool(true));
    assert_eq!(json["values"], serde_json::json!(["hello"]));
    let ctx = json["context"]
        .as_str()
        .expect("context is a string")
        .to_owned();
    assert_eq!(
        json.as_object().unwrap().len(),
        3,
        "exactly values, context and found: {json}"
    );

    // The plain form: values, then the context line.
    let plain = node.cli(&["get", "greeting"]).ok();
    assert_eq!(plain.stdout, format!("hello\ncontext: {ctx}\n"));

    // A missing key: found = false, no values, exit status 0.
    let missing = node.cli(&["get", "nobody-wrote-this", "--json"]);
    assert_eq!(missing.code(), Some(0), "{missing:#?}");
    let json = missing.json();
    assert_eq!(json["found"], Value::Bool(false));
    assert_eq!(json["values"], serde_json::json!([]));
    let missing_plain = node.cli(&["get", "nobody-wrote-this"]).ok();
    assert!(
        missing_plain.stdout.starts_with("not found\n"),
        "{missing_plain:#?}"
    );

    // Two puts without context: two siblings.
    node.cli(&["put", "pair", "left"]).ok();
    node.cli(&["put", "pair", "right"]).ok();
    let both = node.cli(&["get", "pair", "--json"]).ok();
    assert_eq!(values(&both), ["left", "right"]);

    // A put with the context of that get replaces both: one value.
    let both_ctx = both.json()["context"].as_str().unwrap().to_owned();
    node.cli(&["put", "pair", "resolved", "--context", &both_ctx])
        .ok();
    let one = node.cli(&["get", "pair", "--json"]).ok();
    assert_eq!(values(&one), ["resolved"]);

    // The context a put printed works the same way.
    node.cli(&["put", "greeting", "hi", "--context", &put_ctx])
        .ok();
    assert_eq!(
        values(&node.cli(&["get", "greeting", "--json"]).ok()),
        ["hi"]
    );

    // delete with the context of a read: the key is gone.
    let one_ctx = one.json()["context"].as_str().unwrap().to_owned();
    let deleted = node.cli(&["delete", "pair", "--context", &one_ctx]).ok();
    assert_eq!(deleted.stdout.lines().count(), 1, "{deleted:#?}");
    let gone = node.cli(&["get", "pair", "--json"]).ok().json();
    assert_eq!(gone["found"], Value::Bool(false));
    assert_eq!(gone["values"], serde_json::json!([]));

    // A value from stdin (`-`), bytes exactly as given, trailing newline included.
    node.cli_stdin(&["put", "from-stdin", "-"], Some(b"line one\nline two\n"))
        .ok();
    let read = node.cli(&["get", "from-stdin", "--json"]).ok().json();
    assert_eq!(read["values"], serde_json::json!(["line one\nline two\n"]));

    // Binary values: --base64 prints them faithfully, plain JSON refuses them.
    let binary = [0u8, 159, 146, 150, 0xff, b'\n', 0xfe];
    node.cli_stdin(&["put", "binary", "-"], Some(&binary)).ok();
    let b64 = node.cli(&["get", "binary", "--base64"]).ok();
    assert_eq!(
        b64.stdout.lines().next(),
        Some(BASE64.encode(binary).as_str())
    );
    let b64_json = node
        .cli(&["get", "binary", "--json", "--base64"])
        .ok()
        .json();
    assert_eq!(
        b64_json["values"],
        serde_json::json!([BASE64.encode(binary)])
    );
    let refused = node.cli(&["get", "binary", "--json"]);
    assert_ne!(refused.code(), Some(0), "{refused:#?}");
    assert!(refused.stderr.contains("--base64"), "{refused:#?}");

    // status --json lists the one member, up, without hints.
    let status = node.cli(&["status", "--json"]).ok().json();
    assert_eq!(status["node"], "n1");
    assert_eq!(status["members"][0]["state"], "up");
    assert_eq!(status["members"][0]["pending_hints"], 0);
}

#[test]
fn oversized_key_and_value_exit_one_with_the_typed_error_and_the_node_keeps_serving() {
    let mut node = Node::start(&small_limits());

    let long_key = "k".repeat(4097);
    let run = node.cli(&["put", &long_key, "v"]);
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("error: key is 4097 bytes, the limit is 4096"),
        "{run:#?}"
    );
    let run = node.cli(&["get", &long_key]);
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(run.stderr.contains("key is 4097 bytes"), "{run:#?}");
    node.assert_serving("after-long-key");

    let big = vec![b'x'; MAX_VALUE_BYTES + 1];
    let run = node.cli_stdin(&["put", "big", "-"], Some(&big));
    assert_eq!(run.code(), Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "error: value is {} bytes, the limit is {MAX_VALUE_BYTES}",
            MAX_VALUE_BYTES + 1
        )),
        "{run:#?}"
    );
    let read = node.cli(&["get", "big", "--json"]).ok().json();
    assert_eq!(
        read["found"],
        Value::Bool(false),
        "a refused value was stored"
    );
    // Exactly the limit is accepted.
    let fits = vec![b'y'; MAX_VALUE_BYTES];
    node.cli_stdin(&["put", "big", "-"], Some(&fits)).ok();
    node.assert_serving("after-big-value");
}

/// A directory holding the printed default config and dummy TLS files next to it (the
/// config check only needs them to exist).
fn default_config_dir() -> (tempfile::TempDir, String) {
    let run = shoal(&["node", "--print-default-config"], None).ok();
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

#[test]
fn printed_default_config_loads_and_validates() {
    let (dir, text) = default_config_dir();
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

#[test]
fn bad_config_fields_make_shoal_node_exit_two_naming_the_field() {
    let (dir, text) = default_config_dir();
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
        let run = shoal(&["node", "--config", path.to_str().unwrap()], None);
        assert_eq!(run.code(), Some(2), "{name}: {run:#?}");
        for word in expected {
            assert!(run.stderr.contains(word), "{name}: no {word:?} in {run:#?}");
        }
    }

    let run = shoal(&["node"], None);
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
                log_tail(&self.dir.join("cluster"))
            );
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z") | Some("X") | None
        ),
        Err(_) => false,
    }
}

#[test]
fn shoal_dev_runs_a_node_and_sigint_stops_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let port = free_port_block(1).to_string();
    let dev_out = root.path().join("dev.out");
    let out_file = std::fs::File::create(&dev_out).unwrap();
    let mut cmd = Command::new(SHOAL);
    cmd.args(["dev", "--dir", dir.to_str().unwrap(), "--nodes", "1"])
        .args(["--base-port", &port, "--metrics-base-port", &port])
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file);
    let mut guard = DevGuard {
        dev: Some(cmd.spawn().expect("starting shoal dev")),
        nodes: Vec::new(),
        dir: root.path().to_path_buf(),
    };

    // `shoal dev` prints each node's pid, then serves until Ctrl-C.
    let deadline = Instant::now() + START_TIMEOUT;
    let node_pid = loop {
        let out = std::fs::read_to_string(&dev_out).unwrap_or_default();
        let pid = out
            .lines()
            .find(|l| l.starts_with("node n1"))
            .and_then(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "pid")?;
                words.next()?.parse::<i32>().ok()
            });
        if let Some(pid) = pid {
            break pid;
        }
        if let Some(status) = guard.dev.as_mut().unwrap().try_wait().unwrap() {
            panic!("shoal dev exited with {status}: {out}");
        }
        assert!(Instant::now() < deadline, "no node pid printed: {out}");
        std::thread::sleep(POLL_INTERVAL);
    };
    guard.nodes.push(node_pid);
    assert!(process_alive(node_pid));

    // The dev cluster serves: put, then get, through its client config.
    let config = dir.join("client.toml");
    let config = config.to_str().unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let run = shoal(&["--config", config, "put", "dev-key", "dev-value"], None);
        if run.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dev node never served: {run:#?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    let read = shoal(&["--config", config, "get", "dev-key", "--json"], None)
        .ok()
        .json();
    assert_eq!(read["values"], serde_json::json!(["dev-value"]));

    // SIGINT (Ctrl-C) stops `shoal dev` and its node.
    let dev_pid = i32::try_from(guard.dev.as_ref().unwrap().id()).unwrap();
    // SAFETY: a signal to our own unreaped child.
    assert_eq!(unsafe { libc::kill(dev_pid, libc::SIGINT) }, 0);
    let status = wait_child(guard.dev.as_mut().unwrap(), EXIT_TIMEOUT);
    guard.dev = None;
    assert!(status.success(), "shoal dev exited with {status}");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while process_alive(node_pid) {
        assert!(
            Instant::now() < deadline,
            "node {node_pid} still runs after shoal dev stopped"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    let out = std::fs::read_to_string(&dev_out).unwrap();
    assert!(out.contains("stopped"), "{out}");
}
