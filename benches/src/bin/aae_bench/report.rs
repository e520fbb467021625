//! Results: one run per (differences, repetition), summarised per case, printed as a
//! table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cluster::{OpTraffic, StorageTime};

/// One measured round: the exchange after `differences` keys were made to differ, and
/// the full scan of a replica after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Run {
    /// Keys made to differ before the round.
    pub differences: u64,
    /// Partitions whose roots differed before the round.
    pub partitions_differing: u64,
    /// Wall time of the round (both nodes' work, serialised; no network).
    pub exchange_seconds: f64,
    /// Exchanges run (one per partition).
    pub exchanges: u64,
    /// Exchange request/response pairs.
    pub rpcs: u64,
    /// Exchange bytes, both directions.
    pub bytes: u64,
    /// Of which fetch and push messages (objects).
    pub object_bytes: u64,
    /// Objects that changed a replica when merged.
    pub keys_repaired: u64,
    /// Per request kind.
    pub per_op: BTreeMap<String, OpTraffic>,
    /// Of the exchange time: storage ops by kind, both nodes.
    pub storage: BTreeMap<String, StorageTime>,
    /// Of the exchange time: encoding and decoding messages.
    pub codec_seconds: f64,
    /// Wall time of the full scan of one replica.
    pub full_scan_seconds: f64,
    /// Bytes of the (key, digest) list of the full scan.
    pub full_scan_bytes: u64,
    /// Objects the full scan saw.
    pub full_scan_keys: u64,
    /// Wall time of making the differences (not measured as exchange time).
    pub setup_seconds: f64,
}

/// The repetitions of one number of differences, summarised.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Case {
    /// Keys made to differ.
    pub differences: u64,
    /// Median exchange time.
    pub exchange_seconds: f64,
    /// Mean RPCs.
    pub rpcs: u64,
    /// Mean bytes.
    pub bytes: u64,
    /// Mean object bytes.
    pub object_bytes: u64,
    /// Mean keys repaired.
    pub keys_repaired: u64,
    /// Median full-scan time.
    pub full_scan_seconds: f64,
    /// Mean full-scan bytes.
    pub full_scan_bytes: u64,
    /// Every repetition.
    pub runs: Vec<Run>,
}

/// The median of `values` (mean of the middle two for an even count; 0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mean_u64(values: impl ExactSizeIterator<Item = u64>) -> u64 {
    let n = values.len() as u64;
    if n == 0 {
        return 0;
    }
    let sum: u128 = values.map(u128::from).sum();
    u64::try_from((sum + u128::from(n) / 2) / u128::from(n)).unwrap_or(u64::MAX)
}

impl Case {
    /// Summarise the runs of one number of differences.
    pub fn from_runs(differences: u64, runs: Vec<Run>) -> Case {
        let exchange: Vec<f64> = runs.iter().map(|r| r.exchange_seconds).collect();
        let scan: Vec<f64> = runs.iter().map(|r| r.full_scan_seconds).collect();
        Case {
            differences,
            exchange_seconds: median(&exchange),
            rpcs: mean_u64(runs.iter().map(|r| r.rpcs)),
            bytes: mean_u64(runs.iter().map(|r| r.bytes)),
            object_bytes: mean_u64(runs.iter().map(|r| r.object_bytes)),
            keys_repaired: mean_u64(runs.iter().map(|r| r.keys_repaired)),
            full_scan_seconds: median(&scan),
            full_scan_bytes: mean_u64(runs.iter().map(|r| r.full_scan_bytes)),
            runs,
        }
    }
}

/// Whether `metric` strictly grows with the number of differences, over the cases in
/// ascending order of differences (cases with equal counts are not compared).
pub fn grows_with_differences(cases: &[Case], metric: impl Fn(&Case) -> f64) -> bool {
    let mut sorted: Vec<&Case> = cases.iter().collect();
    sorted.sort_by_key(|c| c.differences);
    sorted
        .windows(2)
        .all(|w| w[0].differences == w[1].differences || metric(w[1]) > metric(w[0]))
}

/// `bytes` in decimal units: `999 B`, `12.3 kB`, `4.56 MB`, `7.89 GB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, f64); 3] = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    let b = bytes as f64;
    for (unit, size) in UNITS {
        if b >= size {
            return format!("{:.*} {unit}", decimals(b / size), b / size);
        }
    }
    format!("{bytes} B")
}

/// `seconds` as `123 µs`, `4.56 ms` or `7.89 s`.
pub fn human_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{:.*} s", decimals(seconds), seconds)
    } else if seconds >= 1e-3 {
        let ms = seconds * 1e3;
        format!("{:.*} ms", decimals(ms), ms)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

/// Three significant digits for numbers from 1 to 999.
fn decimals(x: f64) -> usize {
    if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    }
}

/// `part / whole` as a percentage with one decimal (`-` when `whole` is 0).
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The results as a markdown table, one row per case.
pub fn table(cases: &[Case]) -> String {
    let header = [
        "differing keys",
        "exchange time",
        "RPCs",
        "exchange bytes",
        "of which objects",
        "keys repaired",
        "full scan time",
        "full scan bytes",
        "bytes vs scan",
    ];
    let rows: Vec<[String; 9]> = cases
        .iter()
        .map(|c| {
            [
                c.differences.to_string(),
                human_seconds(c.exchange_seconds),
                c.rpcs.to_string(),
                human_bytes(c.bytes),
                human_bytes(c.object_bytes),
                c.keys_repaired.to_string(),
                human_seconds(c.full_scan_seconds),
                human_bytes(c.full_scan_bytes),
                percent(c.bytes, c.full_scan_bytes),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        out.push('|');
        for (i, cell) in cells.iter().enumerate() {
            // The first column is text-like, the others numbers: right-align those.
            if i == 0 {
                let _ = write!(out, " {cell:<w$} |", w = widths[i]);
            } else {
                let _ = write!(out, " {cell:>w$} |", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if i == 0 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", "-".repeat(w.saturating_sub(1)));
        }
    }
    out.push('\n');
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(differences: u64, seconds: f64, bytes: u64) -> Case {
        Case {
            differences,
            exchange_seconds: seconds,
            bytes,
            full_scan_bytes: 24_000_000,
            ..Case::default()
        }
    }

    #[test]
    fn median_takes_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn case_summary_takes_median_time_and_mean_counts() {
        let run = |s: f64, bytes: u64| Run {
            exchange_seconds: s,
            bytes,
            rpcs: bytes / 10,
            ..Run::default()
        };
        let c = Case::from_runs(10, vec![run(0.3, 100), run(0.1, 200), run(0.2, 301)]);
        assert_eq!(c.exchange_seconds, 0.2);
        assert_eq!(c.bytes, 200);
        assert_eq!(c.rpcs, 20);
        assert_eq!(c.runs.len(), 3);
    }

    #[test]
    fn human_units_keep_three_significant_digits() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(12_345), "12.3 kB");
        assert_eq!(human_bytes(4_560_000), "4.56 MB");
        assert_eq!(human_bytes(123_000_000_000), "123 GB");
        assert_eq!(human_seconds(2.5), "2.50 s");
        assert_eq!(human_seconds(0.0456), "45.6 ms");
        assert_eq!(human_seconds(0.000_123), "123 µs");
    }

    #[test]
    fn table_has_a_header_a_rule_and_one_aligned_row_per_case() {
        let t = table(&[case(0, 0.001, 3_000), case(100_000, 2.0, 30_000_000)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| differing keys |"));
        assert!(lines[1].starts_with("| --------------"));
        assert!(lines[2].contains("| 0 "));
        assert!(lines[3].contains("30.0 MB"));
        assert!(lines[3].contains("125.0%"));
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
    }

    #[test]
    fn growth_check_compares_cases_in_order_of_differences() {
        let bytes = |c: &Case| c.bytes as f64;
        let time = |c: &Case| c.exchange_seconds;
        let growing = [
            case(1000, 0.1, 999),
            case(0, 0.001, 10),
            case(10, 0.002, 20),
        ];
        assert!(grows_with_differences(&growing, bytes));
        assert!(grows_with_differences(&growing, time));
        let flat = [case(0, 0.001, 10), case(10, 0.002, 10)];
        assert!(!grows_with_differences(&flat, bytes));
        assert!(grows_with_differences(&flat, time));
    }
}
