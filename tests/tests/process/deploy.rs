//! The deploy artefacts of `deploy/`, checked as far as this machine allows (no Docker
//! daemon, no Kubernetes API server; see deploy/README.md):
//!
//! - the Dockerfile: a builder and a runtime stage, a non-root user, paths it copies that
//!   exist and that `.dockerignore` keeps, the node's default ports exposed, and its
//!   HEALTHCHECK command run for real against a live node (and a closed port);
//! - the compose file: three nodes, Prometheus and Grafana; grafana/'s files mounted, not
//!   copied; its `init.sh` run for real with every file it writes loaded by the node's and
//!   the SDK's config loaders; its Prometheus config accepted by promtool;
//! - the systemd unit: `systemd-analyze verify` without a warning, and the hardening;
//! - the Kubernetes manifests: kinds, probes on the node's default metrics port,
//!   selectors that match the pods, and the ConfigMap's init script run for real (with a
//!   stub resolver) to a node config the node accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml_ng::Value;
use shoal_client::ClientConfig;
use shoal_node::{NodeConfig, DEFAULT_CONFIG_TOML};

use crate::harness::{free_port_block, repo_root, Cluster, BIN};

fn deploy() -> PathBuf {
    repo_root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The port of a `key = "host:port"` line of the node's default config.
fn default_port(key: &str) -> u16 {
    DEFAULT_CONFIG_TOML
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.trim_end_matches('"').rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` in the default config"))
}

/// Every YAML document of a file, with `<<` merge keys applied (as compose does).
fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(&read(path))
        .map(|d| {
            let mut v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

/// A string-to-string YAML mapping (labels, selectors).
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (str_of(k, "key").to_owned(), str_of(v, "value").to_owned()))
        .collect()
}

/// Whether `selector` picks a pod labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---- Dockerfile -------------------------------------------------------------------

/// A Dockerfile's instructions (continuation lines joined, comments dropped), as
/// (keyword, arguments).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (kw, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((kw.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_as_a_non_root_user() {
    let text = read(&deploy().join("Dockerfile"));
    let ins = instructions(&text);
    let stages: Vec<&str> = ins
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a.rsplit(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(stages, ["builder", "runtime"], "stages");
    let runtime_at = ins.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    let (build, run) = ins.split_at(runtime_at);
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("libclang-dev")),
        "the builder installs libclang for RocksDB's bindings"
    );
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked")),
        "the builder builds the release binary from the lock file"
    );
    // Every path the builder copies exists, and .dockerignore does not drop it.
    let ignored: Vec<String> = read(&repo_root().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').to_owned())
        .collect();
    assert!(
        ignored.iter().any(|l| l == "target"),
        ".dockerignore drops target/"
    );
    for (_, args) in build.iter().filter(|(k, _)| k == "COPY") {
        let parts: Vec<&str> = args.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo_root().join(src).exists(), "COPY {src}: no such path");
            assert!(
                !ignored.iter().any(|i| i == src),
                "COPY {src}: in .dockerignore"
            );
        }
    }
    let workspace = read(&repo_root().join("Cargo.toml"));
    let members = workspace
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    for m in members.trim_matches(['[', ']']).split(',') {
        let m = m.trim().trim_matches('"');
        assert!(
            build
                .iter()
                .any(|(k, a)| k == "COPY" && a.split_whitespace().next() == Some(m)),
            "the builder does not copy workspace member {m}"
        );
    }
    let user = run
        .iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, a)| a.split(':').next().unwrap_or_default().to_owned())
        .expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(
        run.iter()
            .any(|(k, a)| k == "COPY" && a.starts_with("--from=builder")),
        "the runtime copies the binary from the builder"
    );
    let exposed: BTreeSet<String> = run
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned))
        .collect();
    for port in [
        format!("{}/udp", default_port("listen")),
        format!("{}/tcp", default_port("metrics_listen")),
    ] {
        assert!(exposed.contains(&port), "EXPOSE {port}: {exposed:?}");
    }
}

/// The HEALTHCHECK's command, as the argument vector of its exec form.
fn healthcheck_command() -> Vec<String> {
    let text = read(&deploy().join("Dockerfile"));
    let (_, args) = instructions(&text)
        .into_iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .expect("a HEALTHCHECK");
    let json = &args[args.find("CMD [").expect("HEALTHCHECK ... CMD [...]") + 4..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("CMD is not an exec form ({e}): {json}"))
}

/// Runs the HEALTHCHECK command with the metrics port replaced by `port`.
fn run_healthcheck(port: u16) -> std::process::ExitStatus {
    let metrics = default_port("metrics_listen").to_string();
    let argv: Vec<String> = healthcheck_command()
        .into_iter()
        .map(|a| a.replace(&format!("/{metrics} "), &format!("/{port} ")))
        .collect();
    assert!(
        argv.iter().any(|a| a.contains(&format!("/{port} "))),
        "the HEALTHCHECK names the metrics port {metrics}: {argv:?}"
    );
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .spawn()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    crate::harness::wait_exit(&mut child, Duration::from_secs(10), "the HEALTHCHECK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_healthcheck_passes_on_a_live_node_and_fails_on_a_closed_port() {
    let cluster = Cluster::start(1, "").await;
    let port = cluster.nodes()[0].metrics.port();
    let status = tokio::task::spawn_blocking(move || run_healthcheck(port))
        .await
        .unwrap();
    assert!(status.success(), "HEALTHCHECK on a live node: {status}");
    let closed = free_port_block(1);
    let status = tokio::task::spawn_blocking(move || run_healthcheck(closed))
        .await
        .unwrap();
    assert!(!status.success(), "HEALTHCHECK on a closed port passed");
}

// ---- compose ----------------------------------------------------------------------

fn compose_dir() -> PathBuf {
    deploy().join("compose")
}

/// `source:target[:mode]` volume entries of a compose service.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| {
            let s = str_of(v, "volume");
            let mut parts = s.split(':');
            let src = parts.next().unwrap_or_default().to_owned();
            let dst = parts.next().unwrap_or_default().to_owned();
            (src, dst)
        })
        .collect()
}

#[test]
fn the_compose_file_runs_three_nodes_prometheus_and_grafana_from_grafana_s_files() {
    let dir = compose_dir();
    let doc = yaml_documents(&dir.join("docker-compose.yml"))
        .pop()
        .expect("a compose document");
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(|k| str_of(k, "service")).collect();
    for want in ["init", "n1", "n2", "n3", "prometheus", "grafana"] {
        assert!(names.contains(want), "no service {want}: {names:?}");
    }
    // Bind mounts name existing files; the grafana/ ones are the repository's own.
    for (name, service) in services {
        for (src, _) in mounts(service) {
            if src.starts_with('.') {
                let path = dir.join(&src);
                assert!(
                    path.exists(),
                    "{name:?}: mounts {src}, which does not exist"
                );
            }
        }
    }
    let grafana_files = |service: &str| -> BTreeSet<PathBuf> {
        mounts(&doc["services"][service])
            .into_iter()
            .filter(|(s, _)| s.starts_with('.'))
            .filter_map(|(s, _)| dir.join(s).canonicalize().ok())
            .collect()
    };
    let root = repo_root().canonicalize().unwrap();
    assert!(grafana_files("prometheus").contains(&root.join("grafana/alerts.yml")));
    let g = grafana_files("grafana");
    assert!(g.contains(&root.join("grafana/dashboards")), "{g:?}");
    assert!(g.contains(&root.join("grafana/provisioning/dashboards/shoal.yml")));
    // The node addresses init.sh writes are the nodes' static addresses.
    let subnet = str_of(&doc["services"]["init"]["environment"]["SUBNET"], "SUBNET");
    let mut targets = Vec::new();
    for i in 1..=3 {
        let node = &doc["services"][format!("n{i}").as_str()];
        let ip = str_of(&node["networks"]["shoal"]["ipv4_address"], "ipv4_address");
        assert_eq!(ip, format!("{subnet}.1{i}"), "n{i}'s address");
        assert_eq!(
            node["depends_on"]["init"]["condition"], "service_completed_successfully",
            "n{i} waits for init"
        );
        targets.push(format!("n{i}:{}", default_port("metrics_listen")));
    }
    // Prometheus scrapes them, with the `shoal` job the alerts expect; promtool accepts
    // the config with grafana/alerts.yml beside it, as the compose file mounts it.
    let prom = yaml_documents(&dir.join("prometheus.yml")).pop().unwrap();
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["job_name"], "shoal");
    let scraped: Vec<&str> = job["static_configs"][0]["targets"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|t| str_of(t, "target"))
        .collect();
    assert_eq!(scraped, targets);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("prometheus.yml"),
        tmp.path().join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("grafana/alerts.yml"),
        tmp.path().join("alerts.yml"),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(tmp.path())
        .output()
        .expect("promtool (the Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_init_script_writes_configs_the_node_and_the_sdk_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("config");
    let run = || {
        Command::new("sh")
            .arg(compose_dir().join("init.sh"))
            .env("SHOAL", BIN)
            .env("OUT", &out_dir)
            .env("OWNER", "")
            .output()
            .expect("running init.sh")
    };
    let out = run();
    assert!(
        out.status.success(),
        "init.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut members = Vec::new();
    for i in 1..=3 {
        let path = out_dir.join(format!("n{i}/node.toml"));
        let cfg = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.id.as_str(), format!("n{i}"));
        assert_eq!(cfg.listen.port(), default_port("listen"));
        assert_eq!(
            cfg.metrics_listen.map(|a| a.port()),
            Some(default_port("metrics_listen"))
        );
        assert_eq!(
            (cfg.replication.n, cfg.replication.r, cfg.replication.w),
            (3, 2, 2)
        );
        members.push(cfg.seeds);
    }
    assert!(members.windows(2).all(|w| w[0] == w[1]), "seeds differ");
    let client = ClientConfig::load(&out_dir.join("client.toml")).expect("client.toml");
    assert_eq!(client.seeds.len(), 3);
    // A second run keeps the cluster it wrote.
    let ca = read(&out_dir.join("ca/ca.pem"));
    assert!(run().status.success());
    assert_eq!(
        read(&out_dir.join("ca/ca.pem")),
        ca,
        "init.sh replaced the CA"
    );
}

// ---- systemd ----------------------------------------------------------------------

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let path = deploy().join("systemd/shoal.service");
    let text = read(&path);
    let settings: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    for (key, want) in [
        ("User", "shoal"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", "/var/lib/shoal"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(settings.get(key).copied(), Some(want), "{key}=");
    }
    let nofile: u64 = settings["LimitNOFILE"].parse().expect("LimitNOFILE");
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");
    assert!(settings["ExecStart"].contains(" node --config "));
    // systemd-analyze checks the binary exists: point ExecStart at the one built here.
    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("shoal.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/shoal", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (the Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It exits 0 on settings it ignores, but names them on stderr.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("shoal.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

// ---- Kubernetes -------------------------------------------------------------------

/// Every manifest of deploy/k8s but the kustomization, by kind.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let dir = deploy().join("k8s");
    for entry in std::fs::read_dir(&dir).expect("deploy/k8s") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("kustomization.yaml") {
            continue;
        }
        for doc in yaml_documents(&path) {
            let kind = str_of(&doc["kind"], "kind").to_owned();
            out.entry(kind).or_default().push(doc);
        }
    }
    out
}

#[test]
fn the_kubernetes_manifests_probe_the_metrics_port_and_select_the_pods() {
    let m = manifests();
    let sts = &m["StatefulSet"][0];
    let spec = &sts["spec"];
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 3);
    assert_eq!(
        spec["podManagementPolicy"], "Parallel",
        "a node is ready only with peers up: ordered start would wait forever"
    );
    assert!(
        spec["volumeClaimTemplates"]
            .as_sequence()
            .is_some_and(|v| !v.is_empty()),
        "volumeClaimTemplates"
    );
    let pod_labels = string_map(&spec["template"]["metadata"]["labels"]);
    assert!(selects(
        &string_map(&spec["selector"]["matchLabels"]),
        &pod_labels
    ));
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: BTreeMap<String, (u64, String)> = container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                str_of(&p["name"], "port name").to_owned(),
                (
                    p["containerPort"].as_u64().unwrap(),
                    str_of(&p["protocol"], "protocol").to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        ports["quic"],
        (u64::from(default_port("listen")), "UDP".to_owned())
    );
    assert_eq!(
        ports["metrics"],
        (u64::from(default_port("metrics_listen")), "TCP".to_owned())
    );
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = match &get["port"] {
            Value::String(name) => ports[name.as_str()].0,
            other => other.as_u64().expect("a probe port"),
        };
        assert_eq!(
            port,
            u64::from(default_port("metrics_listen")),
            "{probe} port"
        );
    }
    // Certificates from a Secret, the config from the ConfigMap.
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"].is_string()));
    let config_map = volumes
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("a ConfigMap volume");
    assert!(m["ConfigMap"]
        .iter()
        .any(|c| c["metadata"]["name"] == config_map));
    // Services: the headless one governs the StatefulSet; every Service selects pods of
    // it; one per member for stable member addresses.
    let services = &m["Service"];
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    assert_eq!(headless["metadata"]["name"], spec["serviceName"]);
    for s in services {
        let selector = string_map(&s["spec"]["selector"]);
        let mut labels = pod_labels.clone();
        if let Some(pod_name) = selector.get("statefulset.kubernetes.io/pod-name") {
            labels.insert(
                "statefulset.kubernetes.io/pod-name".into(),
                pod_name.clone(),
            );
        }
        assert!(
            !selector.is_empty() && selects(&selector, &labels),
            "{:?} selects no pod",
            s["metadata"]["name"]
        );
    }
    let per_pod: BTreeSet<String> = services
        .iter()
        .filter_map(|s| s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"].as_str())
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = (0..replicas).map(|i| format!("shoal-{i}")).collect();
    assert_eq!(per_pod, want, "a Service per member");
    // The disruption budget: one pod at a time, of these pods.
    let pdb = &m["PodDisruptionBudget"][0];
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selects(
        &string_map(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    // kubectl renders the kustomization where it is installed (it needs no cluster).
    match Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy().join("k8s"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("kubectl not run ({e}); the manifests were parsed above"),
    }
}

#[test]
fn the_kubernetes_init_script_writes_a_config_the_node_accepts() {
    let m = manifests();
    let data = &m["ConfigMap"][0]["data"];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("init.sh"), str_of(&data["init.sh"], "init.sh")).unwrap();
    // The TLS files where the template expects them, issued for the pod.
    let tls = dir.join("tls");
    let template = str_of(&data["node.toml.template"], "template")
        .replace("/etc/shoal/tls", tls.to_str().unwrap());
    std::fs::write(dir.join("node.toml.template"), template).unwrap();
    for args in [
        vec!["cert", "ca", "--out", tls.to_str().unwrap()],
        vec![
            "cert",
            "node",
            "--ca",
            tls.to_str().unwrap(),
            "--id",
            "shoal-1",
            "--out",
            dir.join("issued").to_str().unwrap(),
        ],
    ] {
        assert!(Command::new(BIN)
            .args(&args)
            .output()
            .unwrap()
            .status
            .success());
    }
    std::fs::rename(dir.join("issued/node.pem"), tls.join("shoal-1.pem")).unwrap();
    std::fs::rename(dir.join("issued/node.key"), tls.join("shoal-1.key")).unwrap();
    // A stub `getent hosts`: member Service shoal-<i> is at 10.96.0.<10+i>; `missing`
    // in the namespace resolves nothing.
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("getent"),
        "#!/bin/sh\ncase \"$2\" in *.missing.*) exit 2 ;; esac\n\
         i=${2#shoal-}; i=${i%%.*}; echo \"10.96.0.$((10 + i))  $2\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("getent"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = |namespace: &str| {
        Command::new("sh")
            .arg(dir.join("init.sh"))
            .env("PATH", &path)
            .env("POD_NAME", "shoal-1")
            .env("POD_NAMESPACE", namespace)
            .env("REPLICAS", "3")
            .env("TEMPLATE", dir.join("node.toml.template"))
            .env("OUT", dir)
            .env("TRIES", "1")
            .output()
            .expect("running init.sh")
    };
    let out = run("db");
    assert!(
        out.status.success(),
        "init.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = NodeConfig::load(&dir.join("node.toml")).expect("the node accepts the config");
    assert_eq!(cfg.id.as_str(), "shoal-1");
    let seeds: Vec<(String, String)> = cfg
        .seeds
        .iter()
        .map(|s| (s.id.to_string(), s.addr.to_string()))
        .collect();
    let want: Vec<(String, String)> = (0..3)
        .map(|i| (format!("shoal-{i}"), format!("10.96.0.{}:7001", 10 + i)))
        .collect();
    assert_eq!(seeds, want);
    // A member Service that never resolves fails the init container, after its tries.
    std::fs::remove_file(dir.join("node.toml")).unwrap();
    let out = run("missing");
    assert!(!out.status.success(), "init.sh succeeded without addresses");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not resolve"));
    assert!(
        !dir.join("node.toml").exists(),
        "a partial node.toml was left"
    );
}
