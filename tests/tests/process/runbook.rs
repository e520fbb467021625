//! Every alert of `grafana/alerts.yml` links to its section of `docs/RUNBOOK.md`: a
//! `runbook_url` annotation whose anchor is the GitHub anchor of a `## ` heading there,
//! and the runbook's own `(#anchor)` links all land on a heading.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use crate::harness::repo_root;

/// Where the runbook is published; the anchor follows `#`.
const RUNBOOK_URL: &str = "https://github.com/shoal-db/shoal/blob/main/docs/RUNBOOK.md#";

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` removed,
/// spaces turned into `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the `## ` headings of a Markdown text.
fn section_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect()
}

/// (alert name, its `runbook_url` if any) of every rule in an alerts file.
fn alert_runbooks(yaml: &str) -> Vec<(String, Option<String>)> {
    let doc: Value = serde_yaml_ng::from_str(yaml).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .map(str::to_owned);
            out.push((name.to_owned(), url));
        }
    }
    out
}

/// What is wrong with the alerts' runbook links against the runbook's headings.
fn problems(alerts_yaml: &str, runbook: &str) -> Vec<String> {
    let anchors = section_anchors(runbook);
    let mut out = Vec::new();
    let alerts = alert_runbooks(alerts_yaml);
    if alerts.is_empty() {
        out.push("no alerts found".to_owned());
    }
    for (name, url) in alerts {
        match url.as_deref().map(|u| u.strip_prefix(RUNBOOK_URL)) {
            None => out.push(format!("{name}: no runbook_url annotation")),
            Some(None) => out.push(format!(
                "{name}: runbook_url {url:?} does not start with {RUNBOOK_URL}"
            )),
            Some(Some(a)) if !anchors.contains(a) => out.push(format!(
                "{name}: runbook_url anchor #{a} is not a `## ` heading of docs/RUNBOOK.md"
            )),
            Some(Some(_)) => {}
        }
    }
    for link in runbook.split("](#").skip(1) {
        let a = link.split(')').next().unwrap_or_default();
        if !anchors.contains(a) {
            out.push(format!(
                "docs/RUNBOOK.md links to #{a}, which is no heading"
            ));
        }
    }
    out
}

#[test]
fn every_alert_has_a_runbook_url_to_a_section_of_the_runbook() {
    let root = repo_root();
    let alerts = std::fs::read_to_string(root.join("grafana/alerts.yml")).expect("alerts.yml");
    let runbook = std::fs::read_to_string(root.join("docs/RUNBOOK.md")).expect("RUNBOOK.md");
    let found = problems(&alerts, &runbook);
    assert!(found.is_empty(), "{}", found.join("\n"));
    // The sections for alerts whose metrics come with other parts of the node.
    let anchors = section_anchors(&runbook);
    for a in ["certificate-expiry", "replication-lag"] {
        assert!(
            anchors.contains(a),
            "docs/RUNBOOK.md has no `## ` section #{a}"
        );
    }
    // No section outlives its alert (a renamed or removed alert leaves none behind).
    let linked: BTreeSet<String> = alert_runbooks(&alerts)
        .into_iter()
        .filter_map(|(_, url)| Some(url?.strip_prefix(RUNBOOK_URL)?.to_owned()))
        .chain(["certificate-expiry", "replication-lag"].map(String::from))
        .collect();
    let orphans: Vec<&String> = anchors.difference(&linked).collect();
    assert!(
        orphans.is_empty(),
        "sections of docs/RUNBOOK.md no alert links to: {orphans:?}"
    );
}

/// The check itself finds each kind of defect.
#[test]
fn the_runbook_check_finds_missing_and_dangling_links() {
    let runbook = "# R\n\n## Node down\n\nSee [Disk full](#disk-full).\n\n## Disk full\n";
    let rule = |name: &str, annotation: &str| {
        format!("groups:\n  - name: g\n    rules:\n      - alert: {name}\n        expr: up == 0\n        annotations:\n          summary: s\n{annotation}")
    };
    let ok = rule(
        "A",
        &format!("          runbook_url: \"{RUNBOOK_URL}node-down\"\n"),
    );
    assert_eq!(problems(&ok, runbook), Vec::<String>::new());
    assert_eq!(
        anchor("Hints dropped or expired"),
        "hints-dropped-or-expired"
    );
    assert_eq!(anchor("Node down (QUIC)"), "node-down-quic");
    let cases = [
        (rule("A", ""), "no runbook_url"),
        (
            rule(
                "A",
                "          runbook_url: \"https://example.com/#node-down\"\n",
            ),
            "does not start with",
        ),
        (
            rule(
                "A",
                &format!("          runbook_url: \"{RUNBOOK_URL}node-up\"\n"),
            ),
            "#node-up is not",
        ),
    ];
    for (yaml, want) in cases {
        let found = problems(&yaml, runbook);
        assert!(found.iter().any(|p| p.contains(want)), "{want}: {found:?}");
    }
    let dangling = runbook.replace("(#disk-full)", "(#disk-empty)");
    let found = problems(&ok, &dangling);
    assert!(found.iter().any(|p| p.contains("#disk-empty")), "{found:?}");
}
