//! The Grafana dashboards, the alert rules and the example Prometheus config in
//! `grafana/`, checked by a real Prometheus against a live cluster.
//!
//! - The dashboards are canonical JSON (sorted keys, two-space indentation), templated
//!   by `cluster` and `node`, and together show every catalogued node metric.
//! - `promtool` accepts the rules, their unit tests and the example config.
//! - A Prometheus (the Debian package's `/usr/bin/prometheus`; `.ci/run` installs it)
//!   scrapes a 3-node cluster every second while the fault workload runs. Then every
//!   panel query and every alert rule must parse and return data. The rule for
//!   expressions that may legitimately be empty: an alert's condition `A <cmp> B` is
//!   checked as `A` (the comparison removed: a healthy cluster does not fire alerts, but
//!   the series they watch must exist), and a query whose metrics are all marked
//!   *(conditional)* in `docs/METRICS.md` (fault-only) must only parse.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    fault_workload, free_port_block, http_get, log_tail, repo_root, retry_on_port_conflict,
    spawn_logged, url_encode, wait_until, Catalogue, MetricKind, POLL_INTERVAL, START_TIMEOUT,
};

/// Scrape and rule evaluation interval of the test Prometheus.
const SCRAPE_INTERVAL: &str = "1s";
/// What `$__rate_interval` becomes: several scrape intervals, as Grafana makes it.
const RATE_INTERVAL: &str = "15s";
/// How long every query may take to return data after the workload.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the Prometheus log printed when a test fails.
const PROMETHEUS_LOG_LINES: usize = 40;

fn dashboards_dir() -> PathBuf {
    repo_root().join("grafana/dashboards")
}

/// Finds a program on `PATH` (then in `/usr/bin`); panics with how to install it.
fn require_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: this test needs a real Prometheus. Install the \
                 Debian package `prometheus` (apt-get install prometheus), as .ci/run does."
            )
        })
}

/// The dashboards, by file name.
fn dashboards() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dashboards_dir()).expect("reading grafana/dashboards");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("reading a dashboard");
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((name, text, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 3,
        "expected the three dashboards in grafana/dashboards"
    );
    out
}

/// `value` with every object's keys sorted (whatever map serde_json is built with).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Every panel, row panels' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expression) of every panel target.
fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            let expr = t["expr"].as_str().unwrap_or_default().to_owned();
            out.push((title, expr));
        }
    }
    out
}

/// The metric names an expression selects (histogram series names mapped to their base
/// name), and whether it uses `up`.
fn metric_names(expr: &str, catalogue: &Catalogue) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut in_string = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("shoal_") || word == "up" {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .filter(|b| {
                    catalogue
                        .get(b)
                        .is_some_and(|e| e.kind == MetricKind::Histogram)
                })
                .unwrap_or(&word);
            out.insert(base.to_owned());
        }
        word.clear();
    }
    out
}

/// The left side of an expression's last top-level comparison (`==`, `!=`, `>=`, `<=`,
/// `>`, `<`), or the whole expression when it has none.
fn strip_comparison(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let (mut depth, mut in_string, mut cut) = (0i32, false, None);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' => in_string = !in_string,
            _ if in_string => {}
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'=' | b'!' | b'>' | b'<' if depth == 0 => {
                let two = bytes.get(i + 1) == Some(&b'=');
                if two || c == b'>' || c == b'<' {
                    cut = Some(i);
                }
                if two {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    cut.map_or(expr, |at| expr[..at].trim())
}

/// Replaces the dashboard variables by values of the test cluster.
fn substitute(expr: &str, node: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("${cluster}", "test")
        .replace("$cluster", "test")
        .replace("${node}", node)
        .replace("$node", node)
}

#[test]
fn dashboards_are_canonical_templated_and_show_every_node_metric() {
    let catalogue = Catalogue::load();
    let mut uids = BTreeSet::new();
    let mut shown = BTreeSet::new();
    for (name, text, dashboard) in dashboards() {
        let canonical =
            serde_json::to_string_pretty(&sorted(&dashboard)).expect("serialising") + "\n";
        assert!(
            text == canonical,
            "{name} is not canonical JSON (keys sorted, two-space indentation, final newline): \
             reformat it, e.g. `python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); \
             open(sys.argv[1],\"w\").write(json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False)+\"\\n\")' {name}`"
        );
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uids.insert(uid.to_owned()),
            "{name}: missing or duplicate uid {uid:?}"
        );
        assert!(
            dashboard.get("id").is_none(),
            "{name}: no instance-specific `id` in a provisioned dashboard"
        );
        let vars: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v)))
            .collect();
        assert_eq!(
            vars.keys().copied().collect::<Vec<_>>(),
            ["cluster", "datasource", "node"],
            "{name}: template variables"
        );
        assert_eq!(
            vars["node"]["allValue"], ".*",
            "{name}: $node's All must be the regex .*"
        );
        let mut ids = BTreeSet::new();
        for p in panels(&dashboard) {
            let title = p["title"].as_str().unwrap_or("?");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel {title:?} has no id"));
            assert!(ids.insert(id), "{name}: duplicate panel id {id}");
            assert!(
                p["gridPos"].is_object(),
                "{name}: panel {title:?} has no gridPos"
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: panel {title:?} data source"
            );
            let targets = p["targets"].as_array().map_or(0, Vec::len);
            assert!(targets > 0, "{name}: panel {title:?} has no query");
        }
        for (title, expr) in panel_exprs(&dashboard) {
            assert!(
                expr.contains("cluster=~\"$cluster\"") && expr.contains("node=~\"$node\""),
                "{name}: a query of {title:?} does not filter on $cluster and $node: {expr}"
            );
            for m in metric_names(&expr, &catalogue) {
                assert!(
                    catalogue.get(&m).is_some_and(|e| !e.sdk),
                    "{name}: {title:?} uses `{m}`, not a catalogued node metric"
                );
                shown.insert(m);
            }
        }
    }
    let unshown: Vec<&str> = catalogue
        .node_metrics()
        .map(|e| e.name.as_str())
        .filter(|n| !shown.contains(*n))
        .collect();
    assert!(
        unshown.is_empty(),
        "node metrics on no dashboard: {unshown:?}"
    );
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_example_config() {
    let promtool = require_program("promtool");
    let grafana = repo_root().join("grafana");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&grafana)
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn comparison_stripping_keeps_the_watched_expression() {
    assert_eq!(
        strip_comparison("up{job=\"shoal\"} == 0"),
        "up{job=\"shoal\"}"
    );
    assert_eq!(
        strip_comparison("max by (node) (shoal_members{state=\"down\"}) > 0"),
        "max by (node) (shoal_members{state=\"down\"})"
    );
    assert_eq!(strip_comparison("a / b >= 0.5"), "a / b");
    assert_eq!(
        strip_comparison("rate(x{a!=\"b\",c=~\"d\"}[5m])"),
        "rate(x{a!=\"b\",c=~\"d\"}[5m])"
    );
}

/// A Prometheus server of the test, killed on drop.
struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus with the config `config` (YAML) on a free port and waits until
    /// it is ready.
    async fn start(config: &str) -> Prometheus {
        let binary = &require_program("prometheus");
        retry_on_port_conflict("Prometheus", || async move {
            let dir = tempfile::Builder::new()
                .prefix("shoal-prom-")
                .tempdir()
                .expect("a temporary directory");
            std::fs::write(dir.path().join("prometheus.yml"), config)
                .expect("writing prometheus.yml");
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_block(1)));
            let mut cmd = Command::new(binary);
            cmd.arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
            let child = spawn_logged(cmd, &dir.path().join("prometheus.log"), "start");
            let mut prom = Prometheus {
                child: Some(child),
                dir,
                addr,
            };
            prom.wait_ready().await.map(|()| prom)
        })
        .await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "prometheus exited with {status}:\n{}",
                    self.log_tail()
                ));
            }
            match http_get(self.addr, "/-/ready").await {
                Ok((200, _)) => return Ok(()),
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                other => return Err(format!("not ready within {START_TIMEOUT:?}: {other:?}")),
            }
        }
    }

    fn log_tail(&self) -> String {
        log_tail(
            &self.dir.path().join("prometheus.log"),
            PROMETHEUS_LOG_LINES,
        )
    }

    /// GETs an API path and returns its `data` (HTTP errors and `"status": "error"`
    /// answers are `Err`, with Prometheus's `errorType` and `error`).
    async fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.addr, path_and_query).await?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or("?")
            ))
        }
    }

    /// Runs an instant query; `Ok(n)` is the number of series (1 for a scalar).
    async fn query(&self, expr: &str) -> Result<usize, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", url_encode(expr)))
            .await?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().map_or(0, Vec::len)),
            Some("scalar" | "string") => Ok(1),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of the Prometheus log -----\n{}",
                self.log_tail()
            );
        }
    }
}

/// The example config (`grafana/prometheus.yml`) turned into the test's: 1 s intervals,
/// the test nodes as targets, `cluster="test"`, and the absolute path of the rules.
fn test_config(targets: &[SocketAddr]) -> String {
    let example = std::fs::read_to_string(repo_root().join("grafana/prometheus.yml"))
        .expect("reading grafana/prometheus.yml");
    let rules = repo_root().join("grafana/alerts.yml");
    let mut text = example.clone();
    for (from, to) in [
        (
            "scrape_interval: 5s".to_owned(),
            format!("scrape_interval: {SCRAPE_INTERVAL}"),
        ),
        (
            "scrape_timeout: 4s".to_owned(),
            format!("scrape_timeout: {SCRAPE_INTERVAL}"),
        ),
        (
            "evaluation_interval: 5s".to_owned(),
            format!("evaluation_interval: {SCRAPE_INTERVAL}"),
        ),
        ("- alerts.yml".to_owned(), format!("- {}", rules.display())),
        ("cluster: dev".to_owned(), "cluster: test".to_owned()),
    ]
    .into_iter()
    .chain(
        targets
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("- 127.0.0.1:{}", 9101 + i), format!("- {t}"))),
    ) {
        assert_eq!(
            text.matches(&from).count(),
            1,
            "grafana/prometheus.yml should contain `{from}` once"
        );
        text = text.replace(&from, &to);
    }
    text
}

/// One expression to check against the live Prometheus.
struct Check {
    what: String,
    expr: String,
    /// Only fault-only metrics: parsing is enough.
    parse_only: bool,
}

impl Check {
    fn new(what: String, expr: String, catalogue: &Catalogue) -> Check {
        let names = metric_names(&expr, catalogue);
        let parse_only = !names.is_empty()
            && names
                .iter()
                .all(|n| catalogue.get(n).is_some_and(|e| e.conditional));
        Check {
            what,
            expr,
            parse_only,
        }
    }
}

/// The rules Prometheus loaded from `grafana/alerts.yml` (all of them, checked).
async fn loaded_rules(prom: &Prometheus) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("grafana/alerts.yml"))
        .expect("reading alerts.yml");
    let in_file = text
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let groups = prom.api("/api/v1/rules").await.expect("listing rules");
    let rules: Vec<Value> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        rules.len(),
        in_file,
        "Prometheus loaded {} of the {in_file} rules",
        rules.len()
    );
    rules
}

/// Every alert's condition without its comparison, and every panel query with the
/// variables of the test cluster.
fn checks(rules: &[Value], catalogue: &Catalogue) -> Vec<Check> {
    let mut out = Vec::new();
    for r in rules {
        let name = r["name"].as_str().unwrap_or("?");
        let watched = strip_comparison(r["query"].as_str().unwrap_or_default());
        out.push(Check::new(
            format!("alert {name} (its condition without the comparison)"),
            watched.to_owned(),
            catalogue,
        ));
    }
    for (file, _, dashboard) in dashboards() {
        for (title, expr) in panel_exprs(&dashboard) {
            let expr = substitute(&expr, ".*");
            assert!(
                !expr.contains('$'),
                "{file}: {title:?} uses an unknown variable: {expr}"
            );
            out.push(Check::new(format!("{file}: {title}"), expr, catalogue));
        }
    }
    out
}

/// Runs the checks until every one returns data (or only parses, for parse-only ones);
/// a parse error fails at once, missing data after [`QUERY_TIMEOUT`].
async fn assert_checks_pass(prom: &Prometheus, checks: &[Check]) {
    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
    loop {
        let (mut broken, mut empty) = (Vec::new(), Vec::new());
        for c in checks {
            match prom.query(&c.expr).await {
                Err(e) => broken.push(format!("{}: {e}\n    {}", c.what, c.expr)),
                Ok(0) if !c.parse_only => {
                    empty.push(format!("{}: no data\n    {}", c.what, c.expr))
                }
                Ok(_) => {}
            }
        }
        assert!(
            broken.is_empty(),
            "queries Prometheus rejects:\n  {}",
            broken.join("\n  ")
        );
        if empty.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queries with no data {QUERY_TIMEOUT:?} after the workload:\n  {}",
            empty.join("\n  ")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Resolves each dashboard's `label_values(selector, label)` variable queries through
/// Prometheus's label values API; they must give exactly `expected[label]`.
async fn assert_variables_resolve(prom: &Prometheus, expected: &BTreeMap<&str, Vec<String>>) {
    for (file, _, dashboard) in dashboards() {
        let vars = dashboard["templating"]["list"].as_array().cloned();
        for var in vars.into_iter().flatten().filter(|v| v["type"] == "query") {
            let q = substitute(var["query"]["query"].as_str().unwrap_or_default(), ".*");
            let (selector, label) = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.rsplit_once(','))
                .unwrap_or_else(|| {
                    panic!("{file}: variable query {q:?} is not label_values(selector, label)")
                });
            let values = prom
                .api(&format!(
                    "/api/v1/label/{}/values?match[]={}",
                    label.trim(),
                    url_encode(selector.trim())
                ))
                .await
                .unwrap_or_else(|e| panic!("{file}: {q}: {e}"));
            let values: Vec<String> = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            assert_eq!(
                Some(&values),
                expected.get(label.trim()),
                "{file}: values of {q}"
            );
        }
    }
}

/// Waits until every rule has been evaluated without error.
async fn wait_rules_healthy(prom: &Prometheus) {
    wait_until(
        "every alert rule to evaluate cleanly",
        QUERY_TIMEOUT,
        || async {
            let groups = prom.api("/api/v1/rules").await?;
            let bad: Vec<String> = groups["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["health"] != "ok")
                .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_queries_return_data_from_a_live_cluster() {
    require_program("prometheus");
    let catalogue = Catalogue::load();
    let mut cluster = fault_workload::start_cluster().await;
    let targets: Vec<SocketAddr> = cluster.nodes().iter().map(|n| n.metrics).collect();
    let prom = Prometheus::start(&test_config(&targets)).await;
    wait_until("Prometheus to scrape every node", START_TIMEOUT, || async {
        let targets = prom.api("/api/v1/targets?state=active").await?;
        let active = targets["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = active
            .iter()
            .filter(|t| t["health"] == "up" && t["labels"]["cluster"] == "test")
            .count();
        if up == fault_workload::NODES {
            Ok(())
        } else {
            Err(format!(
                "{up} of {} targets up: {active:?}",
                fault_workload::NODES
            ))
        }
    })
    .await;

    let report = fault_workload::run(&mut cluster).await;
    eprintln!("workload: {report:?}");

    let rules = loaded_rules(&prom).await;
    let checks = checks(&rules, &catalogue);
    let parse_only: Vec<&str> = checks
        .iter()
        .filter(|c| c.parse_only)
        .map(|c| c.what.as_str())
        .collect();
    eprintln!(
        "checking {} expressions ({} alert rules); parse only (fault-only metrics): {parse_only:?}",
        checks.len(),
        rules.len()
    );
    assert_checks_pass(&prom, &checks).await;

    let mut expected = BTreeMap::new();
    expected.insert("cluster", vec!["test".to_owned()]);
    expected.insert(
        "node",
        (0..fault_workload::NODES)
            .map(|i| cluster.id(i).to_string())
            .collect(),
    );
    assert_variables_resolve(&prom, &expected).await;
    wait_rules_healthy(&prom).await;
}
