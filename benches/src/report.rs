//! The end-of-run report: a summary (throughput and latency percentiles per operation,
//! errors by label), printed as a table and optionally written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{BenchConfig, Mode};
use crate::stats::{Event, Results, TimelinePoint};

/// Throughput and latency of one operation kind. Latencies are of successful operations,
/// in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    /// Successful operations.
    pub count: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest latency.
    pub max_us: u64,
}

impl OpSummary {
    /// Summarises a latency histogram of `errors`-free operations over `elapsed`.
    pub fn from_histogram(hist: &Histogram<u64>, errors: u64, elapsed: Duration) -> OpSummary {
        let count = hist.len();
        let q = |quantile| {
            if count == 0 {
                0
            } else {
                hist.value_at_quantile(quantile)
            }
        };
        OpSummary {
            count,
            errors,
            throughput: per_second(count, elapsed),
            mean_us: if count == 0 { 0.0 } else { hist.mean() },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if count == 0 { 0 } else { hist.max() },
        }
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// What the `--load` phase did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadSummary {
    /// Keys written successfully.
    pub keys: u64,
    /// Inserts that failed, by label.
    pub errors: BTreeMap<&'static str, u64>,
    /// How long it took.
    pub duration_s: f64,
}

/// The whole report, as printed and as written to `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The workload's name.
    pub workload: &'static str,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Measured time: from the end of the warm-up until the last operation finished.
    pub duration_s: f64,
    /// Successful operations of every kind.
    pub ops_total: u64,
    /// Failed operations of every kind.
    pub errors_total: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Per operation kind (`read`, `update`, `insert`, `rmw`).
    pub ops: BTreeMap<&'static str, OpSummary>,
    /// Errors by label (`ClientError::label()`, or `backlog` for open-loop operations
    /// that could not be sent).
    pub errors: BTreeMap<&'static str, u64>,
    /// Reads that found no value (not errors; the key was never written or was deleted).
    pub not_found: u64,
    /// Operations run during the warm-up, not recorded.
    pub warmup_ops: u64,
    /// Updates that first read their key, as the run had no context for it yet (warm-up
    /// included); in closed loop that read is not in the update's latency.
    pub context_reads: u64,
    /// The load phase, if any.
    pub load: Option<LoadSummary>,
    /// Fault events (kill, restart), in seconds from the start of the measurement.
    pub events: Vec<Event>,
    /// Throughput and p99 per second.
    pub timeline: Vec<TimelinePoint>,
    /// The run's settings.
    pub config: serde_json::Value,
}

impl Summary {
    /// Builds the summary of a run.
    pub fn new(config: &BenchConfig, results: Results, load: Option<LoadSummary>) -> Summary {
        let elapsed = results.elapsed;
        let ops: BTreeMap<&'static str, OpSummary> = results
            .ops
            .iter()
            .map(|(kind, hist, errors)| {
                (
                    kind.name(),
                    OpSummary::from_histogram(hist, *errors, elapsed),
                )
            })
            .collect();
        let ops_total = ops.values().map(|o| o.count).sum();
        let errors_total = results.errors.values().sum();
        Summary {
            workload: config.workload.name(),
            mode: match config.mode {
                Mode::Closed { .. } => "closed",
                Mode::Open { .. } => "open",
            },
            duration_s: elapsed.as_secs_f64(),
            ops_total,
            errors_total,
            throughput: per_second(ops_total, elapsed),
            ops,
            errors: results.errors,
            not_found: results.not_found,
            warmup_ops: results.warmup_ops,
            context_reads: 0,
            load,
            events: results.events,
            timeline: results.timeline,
            config: config.to_json(),
        }
    }

    /// The human-readable report: a line of totals, a table per operation, errors and
    /// events.
    pub fn render_table(&self, heading: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{heading}");
        if let Some(load) = &self.load {
            let errors: u64 = load.errors.values().sum();
            let _ = writeln!(
                out,
                "load: {} keys in {:.2} s, {} errors{}",
                load.keys,
                load.duration_s,
                errors,
                fmt_labels(&load.errors)
            );
        }
        if self.context_reads > 0 {
            let _ = writeln!(
                out,
                "context reads before an update of a key this run had not seen (warm-up included; not timed in closed loop): {}",
                self.context_reads
            );
        }
        let _ = writeln!(
            out,
            "measured {:.2} s: {} ops, {:.1} ops/s, {} errors, {} reads not found{}",
            self.duration_s,
            self.ops_total,
            self.throughput,
            self.errors_total,
            self.not_found,
            if self.warmup_ops > 0 {
                format!(" (after {} warm-up ops)", self.warmup_ops)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "\n{:<8} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms"
        );
        let ms = |us: u64| us as f64 / 1000.0;
        for (name, op) in &self.ops {
            let _ = writeln!(
                out,
                "{:<8} {:>10} {:>8} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name,
                op.count,
                op.errors,
                op.throughput,
                ms(op.p50_us),
                ms(op.p90_us),
                ms(op.p99_us),
                ms(op.p999_us),
                ms(op.max_us)
            );
        }
        if self.ops.len() > 1 {
            let _ = writeln!(
                out,
                "{:<8} {:>10} {:>8} {:>10.1}",
                "total", self.ops_total, self.errors_total, self.throughput
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nerrors:{}", fmt_labels(&self.errors));
        }
        if !self.events.is_empty() {
            let _ = writeln!(out, "\nevents:");
            for e in &self.events {
                let _ = writeln!(out, "  {:>8.2} s  {:<15} {}", e.at_s, e.kind, e.detail);
            }
        }
        out
    }
}

fn fmt_labels(labels: &BTreeMap<&'static str, u64>) -> String {
    labels
        .iter()
        .map(|(label, n)| format!(" {label} {n}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::latency_histogram;

    #[test]
    fn histogram_summary_has_the_percentiles_in_microseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us).unwrap();
        }
        let s = OpSummary::from_histogram(&h, 3, Duration::from_secs(2));
        assert_eq!(s.count, 1000);
        assert_eq!(s.errors, 3);
        assert_eq!(s.throughput, 500.0);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 0.5);
        let json = serde_json::to_value(&s).unwrap();
        for field in [
            "count",
            "throughput",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
        assert_eq!(json["p99_us"], 990);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        let s = OpSummary::from_histogram(&latency_histogram(), 5, Duration::ZERO);
        assert_eq!((s.count, s.p99_us, s.max_us, s.throughput), (0, 0, 0, 0.0));
    }

    #[test]
    fn summary_json_has_the_documented_shape() {
        use crate::args::Cli;
        use crate::stats::{Outcome, Recorder};
        use crate::workload::OpKind;
        use clap::Parser;
        use std::time::Instant;

        let cfg = Cli::try_parse_from(["shoal-bench", "--workload", "a"])
            .unwrap()
            .into_config("client.toml".into())
            .unwrap();
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        let ms = Duration::from_millis;
        for i in 0..100 {
            let kind = if i % 2 == 0 {
                OpKind::Read
            } else {
                OpKind::Update
            };
            r.record(
                kind,
                origin + ms(i),
                origin + ms(i + 1),
                Outcome::Ok { found: None },
            );
        }
        r.record(
            OpKind::Read,
            origin,
            origin + ms(5),
            Outcome::Err("timeout"),
        );
        let summary = Summary::new(&cfg, r.finish(origin + ms(2000)), None);
        let j = serde_json::to_value(&summary).unwrap();
        assert_eq!(j["workload"], "a");
        assert_eq!(j["duration_s"], 2.0);
        assert_eq!(j["throughput"], 50.0);
        assert_eq!(j["ops"]["read"]["count"], 50);
        assert_eq!(j["ops"]["read"]["throughput"], 25.0);
        assert_eq!(j["ops"]["read"]["errors"], 1);
        assert!(j["ops"]["update"]["p999_us"].as_u64().unwrap() >= 1000);
        assert_eq!(j["errors"]["timeout"], 1);
        assert_eq!(j["config"]["workload"], "a");
        assert_eq!(j["timeline"].as_array().unwrap().len(), 2);

        let table = summary.render_table("workload a");
        assert!(table.contains("read"), "{table}");
        assert!(table.contains("errors: timeout 1"), "{table}");
        assert!(table.contains("p99 ms"), "{table}");
    }
}
