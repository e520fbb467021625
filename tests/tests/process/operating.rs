//! Operating a node: `log_format = "json"` makes every line the node writes a JSON
//! object with `level` and `message`; the node exports its process's CPU time, resident
//! memory and file descriptors (`shoal_process_*`), agreeing with what `/proc` says of it.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{scrape, wait_until, Cluster};

/// The node logs `serving` once started, and publishes its process statistics every 5 s
/// (the first at once); this leaves room for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(30);

/// The lines the node wrote to its log, without the harness's own `=====` markers.
fn node_log_lines(cluster: &Cluster, id: &str) -> Vec<String> {
    let path = cluster.dir().join(id).join("node.log");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with("===== test harness"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_json_logs_writes_one_json_object_per_line() {
    let cluster = Cluster::start(1, "log_format = \"json\"").await;
    let lines = wait_until("the node to log `serving`", WAIT, || async {
        let lines = node_log_lines(&cluster, "n1");
        if lines.iter().any(|l| l.contains("\"serving\"")) {
            Ok(lines)
        } else {
            Err(format!("{lines:?}"))
        }
    })
    .await;
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not a JSON object: {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(
                obj.get(field).is_some_and(Value::is_string),
                "no string `{field}`: {line}"
            );
        }
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&obj["level"].as_str().unwrap()),
            "{line}"
        );
    }
    let serving: Value = lines
        .iter()
        .find(|l| l.contains("\"serving\""))
        .map(|l| serde_json::from_str(l).expect("checked above"))
        .expect("found above");
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["message"], "serving");
    // The event's fields sit at the top level beside the message.
    assert_eq!(serving["node"], "n1", "{serving}");
    assert!(serving["addr"].is_string(), "{serving}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_exports_its_process_cpu_memory_and_descriptors() {
    let cluster = Cluster::start(1, "").await;
    let node = &cluster.nodes()[0];
    let pid = node.pid().expect("the node runs");
    // The gauges are read at start and every 5 s after. CPU time has clock-tick
    // resolution (10 ms), and a node can start on less than that on a fast machine (a
    // CI run read 0 at start), so the wait also lasts until a reading shows CPU used:
    // a node that exported 0 for good fails it.
    let exposition = wait_until("the process gauges, with CPU used", WAIT, || async {
        let e = scrape(node.metrics).await?;
        if !e.samples.iter().any(|s| s.name == "shoal_process_open_fds") {
            return Err("no shoal_process_open_fds yet".to_owned());
        }
        match e.sum("shoal_process_cpu_seconds_total", &[]) {
            cpu if cpu > 0.0 => Ok(e),
            cpu => Err(format!("shoal_process_cpu_seconds_total is {cpu}")),
        }
    })
    .await;
    let value = |name: &str| exposition.sum(name, &[]);
    let rss = value("shoal_process_resident_memory_bytes");
    let fds = value("shoal_process_open_fds");
    let max_fds = value("shoal_process_max_fds");
    // Bounds from the node's own /proc entries: RSS within the process's peak, and the
    // descriptor count near what the directory lists now (it moves with connections).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/pid");
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/pid/status");
    assert!(
        rss > (1 << 20) as f64 && rss <= peak_kib * 1024.0,
        "RSS {rss} outside 1 MiB..=peak {peak_kib} KiB"
    );
    let listed = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/pid/fd")
        .count() as f64;
    assert!(
        fds >= 10.0 && (fds - listed).abs() <= 50.0,
        "{fds} open descriptors exported, {listed} listed now"
    );
    assert!(max_fds >= fds, "limit {max_fds} below open {fds}");
    let types = |name: &str| exposition.types.get(name).cloned();
    assert_eq!(
        types("shoal_process_cpu_seconds_total").as_deref(),
        Some("gauge")
    );
}
