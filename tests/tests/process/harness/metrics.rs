//! A plain HTTP/1.0 GET and a parser of the Prometheus text exposition format, so that
//! no HTTP client crate is needed: the one scraper of the nodes' `/metrics` and the
//! client of the test Prometheus's API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::catalogue::{is_metric_name, MetricKind};

/// Timeout of one HTTP exchange (a scrape or a Prometheus API call).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest HTTP response read.
const MAX_HTTP_RESPONSE_BYTES: u64 = 64 << 20;

/// `GET path_and_query` over HTTP/1.0 (the server closes the connection; a chunked
/// answer is decoded), bounded by [`HTTP_TIMEOUT`]; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path_and_query: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let request = format!(
            "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_HTTP_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {addr}{path_and_query} within {HTTP_TIMEOUT:?}"))??;
    let text = String::from_utf8(raw).map_err(|e| format!("non-UTF-8 response: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", text.len()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        body = rest.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// Percent-encodes `s` for a URL query parameter.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series name (`_bucket`, `_sum`, `_count` included for histograms).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape: the `# TYPE` of each family and every sample.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Family name → type, from the `# TYPE` lines.
    pub types: BTreeMap<String, String>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the Prometheus text exposition format.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut out = Exposition::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    out.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(|e| format!("line {}: {e}: {line}", i + 1))?;
            out.samples.push(sample);
        }
        Ok(out)
    }

    /// Whether the scrape has the family `name` with type `kind` and at least one
    /// sample of it (`name_bucket` for a histogram). `Err` says what is wrong.
    pub fn check_family(&self, name: &str, kind: MetricKind) -> Result<(), String> {
        let sample_name = match kind {
            MetricKind::Histogram => format!("{name}_bucket"),
            _ => name.to_owned(),
        };
        let has_samples = self.samples.iter().any(|s| s.name == sample_name);
        match self.types.get(name) {
            None if !has_samples => Err("absent".into()),
            None => Err("samples without a # TYPE line".into()),
            Some(t) if t != kind.as_str() => {
                Err(format!("# TYPE is {t}, catalogued as {}", kind.as_str()))
            }
            Some(_) if !has_samples => Err(format!("# TYPE line but no {sample_name} sample")),
            Some(_) => Ok(()),
        }
    }

    /// Sum of the samples named `name` whose labels include every pair of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            while chars
                .next_if(|(_, c)| *c == ',' || c.is_whitespace())
                .is_some()
            {}
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i + 1;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=') {
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(format!("label {key:?} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some(c) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            labels.insert(key.trim().to_owned(), value);
        }
        rest = &after[end..];
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Scrapes `http://addr/metrics` and parses it.
pub async fn scrape(addr: SocketAddr) -> Result<Exposition, String> {
    match http_get(addr, "/metrics").await? {
        (200, body) => Exposition::parse(&body),
        (status, body) => Err(format!("GET /metrics on {addr}: HTTP {status}: {body}")),
    }
}

#[test]
fn exposition_parser_reads_types_labels_escapes_and_histograms() {
    let text = "# HELP shoal_a_total A.\n# TYPE shoal_a_total counter\n\
                shoal_a_total{node=\"n1\",op=\"get\"} 3\n\
                shoal_a_total{node=\"n1\",op=\"put\"} 4\n\
                # TYPE shoal_g gauge\nshoal_g{node=\"n1\",why=\"a \\\"quoted\\\" \\\\ value\"} -1.5\n\
                # TYPE shoal_h_seconds histogram\n\
                shoal_h_seconds_bucket{node=\"n1\",le=\"0.5\"} 1\n\
                shoal_h_seconds_bucket{node=\"n1\",le=\"+Inf\"} 2\n\
                shoal_h_seconds_sum{node=\"n1\"} 0.75\nshoal_h_seconds_count{node=\"n1\"} 2\n\
                shoal_bare 7\n";
    let e = Exposition::parse(text).expect("a valid exposition");
    assert_eq!(e.sum("shoal_a_total", &[]), 7.0);
    assert_eq!(e.sum("shoal_a_total", &[("op", "put")]), 4.0);
    assert_eq!(e.sum("shoal_g", &[("why", "a \"quoted\" \\ value")]), -1.5);
    assert_eq!(e.sum("shoal_bare", &[]), 7.0);
    assert!(e.check_family("shoal_a_total", MetricKind::Counter).is_ok());
    assert!(e
        .check_family("shoal_h_seconds", MetricKind::Histogram)
        .is_ok());
    assert!(e.check_family("shoal_g", MetricKind::Counter).is_err());
    assert!(e
        .check_family("shoal_missing_total", MetricKind::Counter)
        .is_err());
    assert!(Exposition::parse("shoal_x{a=\"b\" 1\n").is_err());
}
