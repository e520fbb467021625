//! The metric tables of `docs/METRICS.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::repo_root;

/// A metric type as the catalogue and the Prometheus `# TYPE` line spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
}

impl MetricKind {
    /// The Prometheus spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }

    fn parse(s: &str) -> Option<MetricKind> {
        match s {
            "counter" => Some(MetricKind::Counter),
            "gauge" => Some(MetricKind::Gauge),
            "histogram" => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

/// One row of a metric table of `docs/METRICS.md`.
#[derive(Clone, Debug)]
pub struct CatalogueEntry {
    /// The metric's base name.
    pub name: String,
    /// Its type.
    pub kind: MetricKind,
    /// Marked `(conditional)`: only a fault produces it.
    pub conditional: bool,
    /// Listed in the SDK section (emitted by the client library, not by nodes).
    pub sdk: bool,
}

/// The metric tables of `docs/METRICS.md`.
#[derive(Clone, Debug)]
pub struct Catalogue {
    /// Every row, in file order.
    pub entries: Vec<CatalogueEntry>,
}

/// The header every metric table of `docs/METRICS.md` has.
const CATALOGUE_HEADER: &str = "| name | type | labels | unit | description |";

impl Catalogue {
    /// Path of the catalogue.
    pub fn path() -> PathBuf {
        repo_root().join("docs/METRICS.md")
    }

    /// Reads and parses `docs/METRICS.md`; panics naming the line of any malformed row.
    pub fn load() -> Catalogue {
        let path = Catalogue::path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Catalogue::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Parses the catalogue text. A metric row is a table row whose first cell is a
    /// backquoted name; rows under the `## SDK` heading are SDK metrics.
    pub fn parse(text: &str) -> Result<Catalogue, String> {
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut seen = BTreeSet::new();
        let mut in_table = false;
        for (i, line) in text.lines().enumerate() {
            let at = i + 1;
            if let Some(heading) = line.strip_prefix("## ") {
                section = heading.trim().to_owned();
                continue;
            }
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            if line.trim() == CATALOGUE_HEADER {
                in_table = true;
                continue;
            }
            if !line.starts_with("| `") {
                continue;
            }
            if !in_table {
                return Err(format!(
                    "line {at}: a metric row outside a table headed `{CATALOGUE_HEADER}`"
                ));
            }
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if cells.len() != 5 {
                return Err(format!(
                    "line {at}: a metric row has 5 cells (name, type, labels, unit, \
                     description), found {}",
                    cells.len()
                ));
            }
            let name = cells[0].trim_matches('`');
            if !is_metric_name(name) || !name.starts_with("shoal_") {
                return Err(format!("line {at}: `{name}` is not a shoal_* metric name"));
            }
            let kind = MetricKind::parse(cells[1])
                .ok_or_else(|| format!("line {at}: unknown type `{}`", cells[1]))?;
            if !seen.insert(name.to_owned()) {
                return Err(format!("line {at}: `{name}` is listed twice"));
            }
            if cells[2].is_empty() || cells[3].is_empty() || cells[4].is_empty() {
                return Err(format!(
                    "line {at}: labels, unit and description must be filled (use — for none)"
                ));
            }
            entries.push(CatalogueEntry {
                name: name.to_owned(),
                kind,
                conditional: cells[4].contains("(conditional"),
                sdk: section == "SDK",
            });
        }
        if entries.is_empty() {
            return Err("no metric rows found".into());
        }
        Ok(Catalogue { entries })
    }

    /// The rows of metrics nodes serve.
    pub fn node_metrics(&self) -> impl Iterator<Item = &CatalogueEntry> {
        self.entries.iter().filter(|e| !e.sdk)
    }

    /// The row of `name`, if catalogued.
    pub fn get(&self, name: &str) -> Option<&CatalogueEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Whether `s` is a valid Prometheus metric name.
pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn catalogue_parser_rejects_malformed_rows() {
    let header = CATALOGUE_HEADER;
    let ok = format!("## A\n\n{header}\n|---|---|---|---|---|\n| `shoal_x_total` | counter | — | things | X. |\n");
    let parsed = Catalogue::parse(&ok).expect("a well-formed table");
    assert_eq!(parsed.entries.len(), 1);
    assert!(!parsed.entries[0].sdk && !parsed.entries[0].conditional);
    for bad in [
        ok.replace("counter", "summary"),
        ok.replace(" | X. |", " |"),
        ok.replace("shoal_x_total", "x-total"),
        format!("{ok}| `shoal_x_total` | counter | — | things | Again. |\n"),
        ok.replace("| name |", "| metric |"),
    ] {
        assert!(Catalogue::parse(&bad).is_err(), "accepted:\n{bad}");
    }
    let sdk = format!("## SDK\n\n{header}\n| `shoal_client_x_total` | counter | — | calls | *(conditional: never)* X. |\n");
    let parsed = Catalogue::parse(&sdk).expect("an SDK table");
    assert!(parsed.entries[0].sdk && parsed.entries[0].conditional);
}
