//! `docs/METRICS.md` against the code and against live nodes.
//!
//! - The catalogue lists exactly the metric names the code emits (`metrics::counter!`,
//!   `gauge!`, `histogram!` in `proto`, `node`, `storage`, `transport`; the SDK's in
//!   `client` in its own section), each with the type of the macro that emits it.
//! - A real 3-node cluster put through faults ([`fault_workload::run`])
//!   exports every catalogued node metric with its catalogued type, except the few
//!   marked *(conditional)*, and nothing uncatalogued.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::{fault_workload, repo_root, scrape, Catalogue, MetricKind};

/// Crates whose metrics nodes serve.
const NODE_CRATES: &[&str] = &["proto/src", "node/src", "storage/src", "transport/src"];
/// The SDK crate.
const SDK_CRATES: &[&str] = &["client/src"];

/// One metric emission found in the source.
#[derive(Debug, Clone)]
struct Emission {
    name: String,
    kind: MetricKind,
    at: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source text without comment lines (doc comments may quote macro calls).
fn code_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `const NAME: &str = "value";` definitions, by name.
fn string_constants(text: &str, consts: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        let Some(at) = line.find("const ") else {
            continue;
        };
        let rest = &line[at + "const ".len()..];
        let Some((ident, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some((ty, value)) = rest.split_once('=') else {
            continue;
        };
        if ty.trim() != "&str" && ty.trim() != "&'static str" {
            continue;
        }
        let value = value.trim().trim_end_matches(';').trim();
        if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            consts.insert(ident.trim().to_owned(), v.to_owned());
        }
    }
}

/// Every `counter!`/`gauge!`/`histogram!` call of the `.rs` files under `dirs` (relative
/// to the repository root), with its name resolved through string constants of the same
/// files. Panics on a call whose name it cannot resolve, so that a new way of naming a
/// metric is not silently missed.
fn emissions(dirs: &[&str]) -> Vec<Emission> {
    let root = repo_root();
    let mut files = Vec::new();
    for d in dirs {
        rust_files(&root.join(d), &mut files);
    }
    files.sort();
    let texts: Vec<(PathBuf, String)> = files.iter().map(|f| (f.clone(), code_text(f))).collect();
    let mut consts = BTreeMap::new();
    for (_, text) in &texts {
        string_constants(text, &mut consts);
    }
    let mut out = Vec::new();
    for (path, text) in &texts {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        for (macro_name, kind) in [
            ("counter!", MetricKind::Counter),
            ("gauge!", MetricKind::Gauge),
            ("histogram!", MetricKind::Histogram),
        ] {
            let mut from = 0;
            while let Some(pos) = text[from..].find(macro_name) {
                let start = from + pos;
                from = start + macro_name.len();
                // `describe_counter!` and friends only describe; skip identifiers ending
                // in the macro name.
                let before = text[..start].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let line = text[..start].lines().count().max(1);
                let at = format!("{rel}:{line}");
                let args = text[from..].trim_start();
                let Some(args) = args.strip_prefix('(') else {
                    continue;
                };
                let args = args.trim_start();
                let name = if let Some(lit) = args.strip_prefix('"') {
                    lit.split('"').next().unwrap_or_default().to_owned()
                } else {
                    let path: String = args
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let ident = path.rsplit("::").next().unwrap_or_default();
                    consts.get(ident).cloned().unwrap_or_else(|| {
                        panic!(
                            "{at}: cannot resolve the metric name `{path}` of a {macro_name} call"
                        )
                    })
                };
                out.push(Emission {
                    name,
                    kind,
                    at: at.clone(),
                });
            }
        }
    }
    out
}

/// Checks emissions against the catalogue rows with `sdk == sdk`; returns the problems.
fn compare(catalogue: &Catalogue, found: &[Emission], sdk: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut kinds: BTreeMap<&str, (MetricKind, &str)> = BTreeMap::new();
    for e in found {
        match kinds.get(e.name.as_str()) {
            Some((k, first)) if *k != e.kind => problems.push(format!(
                "`{}` is emitted as a {} at {} and as a {} at {}",
                e.name,
                k.as_str(),
                first,
                e.kind.as_str(),
                e.at
            )),
            _ => {
                kinds.insert(&e.name, (e.kind, &e.at));
            }
        }
        if !e.name.starts_with("shoal_") {
            problems.push(format!(
                "`{}` ({}) does not start with shoal_",
                e.name, e.at
            ));
        }
        if e.kind == MetricKind::Counter && !e.name.ends_with("_total") {
            problems.push(format!(
                "counter `{}` ({}) does not end in _total",
                e.name, e.at
            ));
        }
        // Only these suffixes get histogram buckets (node/src/metrics.rs); any other
        // histogram would be exported as a summary.
        if e.kind == MetricKind::Histogram
            && !(e.name.ends_with("_seconds") || e.name.ends_with("_bytes"))
        {
            problems.push(format!(
                "histogram `{}` ({}) ends in neither _seconds nor _bytes",
                e.name, e.at
            ));
        }
        if sdk != e.name.starts_with("shoal_client_") {
            problems.push(format!(
                "`{}` ({}): SDK metrics, and only they, are named shoal_client_*",
                e.name, e.at
            ));
        }
    }
    for (name, (kind, at)) in &kinds {
        match catalogue.get(name) {
            None => problems.push(format!(
                "`{name}` (a {}, {at}) is not in docs/METRICS.md",
                kind.as_str()
            )),
            Some(entry) if entry.sdk != sdk => problems.push(format!(
                "`{name}` ({at}) is catalogued in the wrong section (SDK: {})",
                entry.sdk
            )),
            Some(entry) if entry.kind != *kind => problems.push(format!(
                "`{name}` is catalogued as a {} but {at} emits a {}",
                entry.kind.as_str(),
                kind.as_str()
            )),
            Some(_) => {}
        }
    }
    for entry in catalogue.entries.iter().filter(|e| e.sdk == sdk) {
        if !kinds.contains_key(entry.name.as_str()) {
            problems.push(format!(
                "`{}` is catalogued but the code never emits it",
                entry.name
            ));
        }
    }
    problems
}

#[test]
fn catalogue_lists_exactly_the_metrics_the_code_emits() {
    let catalogue = Catalogue::load();
    let node = emissions(NODE_CRATES);
    let sdk = emissions(SDK_CRATES);
    assert!(
        node.len() >= 50,
        "found only {} node metric emissions: is the scanner broken?",
        node.len()
    );
    assert!(
        !sdk.is_empty(),
        "found no SDK metric emissions: is the scanner broken?"
    );
    let mut problems = compare(&catalogue, &node, false);
    problems.extend(compare(&catalogue, &sdk, true));
    assert!(
        problems.is_empty(),
        "docs/METRICS.md and the code disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_cluster_exports_every_catalogued_node_metric() {
    let catalogue = Catalogue::load();
    let mut cluster = fault_workload::start_cluster().await;
    let report = fault_workload::run(&mut cluster).await;
    eprintln!("workload: {report:?}");

    let mut scrapes = Vec::new();
    for node in cluster.nodes() {
        let exposition = scrape(node.metrics)
            .await
            .unwrap_or_else(|e| panic!("scraping {}: {e}", node.id));
        for s in &exposition.samples {
            assert_eq!(
                s.labels.get("node").map(String::as_str),
                Some(node.id.as_str()),
                "every series of {} carries node=\"{}\": {s:?}",
                node.id,
                node.id
            );
        }
        scrapes.push((node.id.clone(), exposition));
    }

    let mut missing = Vec::new();
    for entry in catalogue.node_metrics() {
        let seen: Vec<Result<(), String>> = scrapes
            .iter()
            .map(|(_, e)| e.check_family(&entry.name, entry.kind))
            .collect();
        if seen.iter().any(Result::is_ok) || entry.conditional {
            continue;
        }
        let why: BTreeSet<String> = seen.into_iter().filter_map(Result::err).collect();
        missing.push(format!("{} ({}): {why:?}", entry.name, entry.kind.as_str()));
    }
    let mut uncatalogued = BTreeSet::new();
    for (id, e) in &scrapes {
        for family in e.types.keys() {
            if family.starts_with("shoal_") && catalogue.get(family).is_none() {
                uncatalogued.insert(format!("{family} (on {id})"));
            }
        }
    }
    assert!(
        missing.is_empty() && uncatalogued.is_empty(),
        "after the workload, catalogued node metrics no node exports:\n  {}\nexported but not catalogued: {uncatalogued:?}",
        missing.join("\n  ")
    );
}
