//! `docs/METRICS.md` against the code and against live nodes.
//!
//! - The catalogue lists exactly the metric names the code emits (`metrics::counter!`,
//!   `gauge!`, `histogram!` in `proto`, `executor`, `node`, `storage`, `transport`; the
//!   SDK's in `client` in its own section), each with the type of the macro that emits
//!   it, names given as constants resolved to their values.
//! - A real 3-node cluster put through faults ([`fault_workload::run`])
//!   exports every catalogued node metric with its catalogued type, except the few
//!   marked *(conditional)*, and nothing uncatalogued.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::{fault_workload, repo_root, scrape, Catalogue, MetricKind};

/// Crates whose metrics nodes serve.
const NODE_CRATES: &[&str] = &[
    "proto/src",
    "executor/src",
    "node/src",
    "storage/src",
    "transport/src",
];
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

/// A `const NAME: &str = "value";` definition.
#[derive(Debug)]
struct StringConstant {
    /// The crate directory of the file that defines it (`proto`, `node`, ...).
    krate: String,
    /// The file that defines it.
    file: PathBuf,
    value: String,
}

/// `const NAME: &str = "value";` definitions of `text` (the file `file` of crate
/// `krate`), added to `consts` by name. The value may stand on the line after the `=`
/// (as rustfmt puts a long one).
fn string_constants(
    krate: &str,
    file: &Path,
    text: &str,
    consts: &mut BTreeMap<String, Vec<StringConstant>>,
) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
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
        let mut value = value.trim();
        if value.is_empty() {
            value = lines.get(i + 1).map_or("", |l| l.trim());
        }
        let value = value.trim_end_matches(';').trim();
        if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            consts
                .entry(ident.trim().to_owned())
                .or_default()
                .push(StringConstant {
                    krate: krate.to_owned(),
                    file: file.to_owned(),
                    value: v.to_owned(),
                });
        }
    }
}

/// The value of the constant `path` (`NAME`, `crate::metrics::NAME`,
/// `shoal_proto::metrics::NAME`, an alias `engine::NAME`, ...) used in `file` of crate
/// `krate`. Several crates define constants of the same name (`REQUESTS_TOTAL`), so a
/// definition in the same file wins, then one in the crate the path names (`shoal_x::`:
/// crate `x`; `crate::` or no crate: the same crate), then the only value left.
fn resolve(
    consts: &BTreeMap<String, Vec<StringConstant>>,
    krate: &str,
    file: &Path,
    path: &str,
) -> Option<String> {
    let ident = path.rsplit("::").next()?;
    let defs = consts.get(ident)?;
    if let Some(d) = defs.iter().find(|d| d.file == file) {
        return Some(d.value.clone());
    }
    let named = path
        .split("::")
        .next()
        .and_then(|first| first.strip_prefix("shoal_"))
        .unwrap_or(krate);
    let in_crate: Vec<&StringConstant> = defs.iter().filter(|d| d.krate == named).collect();
    let candidates = if in_crate.is_empty() {
        defs.iter().collect()
    } else {
        in_crate
    };
    let values: BTreeSet<&str> = candidates.iter().map(|d| d.value.as_str()).collect();
    match values.into_iter().collect::<Vec<_>>()[..] {
        [only] => Some(only.to_owned()),
        _ => None,
    }
}

/// Every `counter!`/`gauge!`/`histogram!` call (and `Handles::counter`/`gauge`/`histogram`) of the `.rs` files under `dirs` (relative
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
    let texts: Vec<(PathBuf, String, String)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            (f.clone(), rel, code_text(f))
        })
        .collect();
    let krate = |rel: &str| rel.split('/').next().unwrap_or_default().to_owned();
    let mut consts = BTreeMap::new();
    for (path, rel, text) in &texts {
        string_constants(&krate(rel), path, text, &mut consts);
    }
    let mut out = Vec::new();
    for (path, rel, text) in &texts {
        for (macro_name, kind) in [
            ("counter!", MetricKind::Counter),
            ("gauge!", MetricKind::Gauge),
            ("histogram!", MetricKind::Histogram),
            // Cached handles (`shoal-metric-handles`).
            ("Handles::counter", MetricKind::Counter),
            ("Handles::gauge", MetricKind::Gauge),
            ("Handles::histogram", MetricKind::Histogram),
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
                    let constant: String = args
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    resolve(&consts, &krate(rel), path, &constant).unwrap_or_else(|| {
                        panic!(
                            "{at}: cannot resolve the metric name `{constant}` of a {macro_name} call"
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
        // Only these suffixes, and the count histograms given buckets of their own, get
        // histogram buckets (node/src/metrics.rs); any other histogram would be exported
        // as a summary.
        if e.kind == MetricKind::Histogram
            && !(e.name.ends_with("_seconds")
                || e.name.ends_with("_bytes")
                || e.name == shoal_proto::metrics::OBJECT_SIBLINGS
                || e.name == "shoal_group_commit_writes"
                || e.name == "shoal_wal_write_out_writes"
                || e.name == "shoal_peer_batch_requests"
                || e.name == "shoal_batched_client_requests"
                || e.name == "shoal_client_batched_requests")
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

/// Constants of the same name in several crates resolve to the one the call site means.
#[test]
fn metric_name_constants_resolve_by_file_then_crate() {
    let mut consts = BTreeMap::new();
    let node = Path::new("node/src/metrics.rs");
    let transport = Path::new("transport/src/metrics.rs");
    string_constants(
        "node",
        node,
        "pub const REQUESTS_TOTAL: &str = \"n_total\";\npub const LONG: &str =\n    \"l_total\";",
        &mut consts,
    );
    string_constants(
        "transport",
        transport,
        "pub const REQUESTS_TOTAL: &str = \"t_total\";",
        &mut consts,
    );
    let handler = Path::new("node/src/server/handler.rs");
    let value = |krate: &str, file: &Path, path: &str| resolve(&consts, krate, file, path);
    assert_eq!(
        value("node", transport, "REQUESTS_TOTAL").as_deref(),
        Some("t_total")
    );
    assert_eq!(
        value("node", handler, "crate::metrics::REQUESTS_TOTAL").as_deref(),
        Some("n_total")
    );
    assert_eq!(
        value("node", handler, "shoal_transport::metrics::REQUESTS_TOTAL").as_deref(),
        Some("t_total")
    );
    assert_eq!(value("proto", handler, "REQUESTS_TOTAL"), None, "ambiguous");
    assert_eq!(value("proto", handler, "LONG").as_deref(), Some("l_total"));
    assert_eq!(value("node", handler, "MISSING"), None);
}
