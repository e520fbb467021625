//! The metrics listener's small HTTP/1 server: `GET /metrics` (the Prometheus
//! exposition), `GET /health` (liveness) and `GET /ready` (readiness, see [`super::health`]).
//!
//! The exporter's own listener serves only the exposition, so the recorder runs without
//! it and this server renders through its handle. Bounded: at most [`MAX_CONNECTIONS`]
//! connections at once (more are closed at once), a request head of at most
//! [`MAX_REQUEST_BYTES`], and [`IO_TIMEOUT`] for reading the request and for writing the
//! answer. Every answer closes the connection; connections closed unanswered for a bound
//! count in `shoal_metrics_http_refused_total`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections served at once; scrapers and probes need a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// The largest request head read; a GET with its headers fits easily.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time allowed to read the request, and again to write the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the recorder's histograms are compacted (the exporter's listener did it).
/// Every recorded histogram value waits in the recorder until the next upkeep or scrape
/// folds it into its buckets: under load that is about a million values per node every
/// 5 s, 10 ms of work at once, so it runs every second, off the runtime's thread.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Bind `addr` and serve on it for the life of the runtime.
pub fn spawn(addr: SocketAddr, handle: PrometheusHandle) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("starting the metrics listener on {addr}"))?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(upkeep(handle.clone()));
    tokio::spawn(accept(listener, handle));
    Ok(())
}

/// Fold the recorded histogram values into their buckets every [`UPKEEP_INTERVAL`], on
/// a blocking thread so that the runtime's requests do not wait behind it (one at a
/// time: the next tick waits for the last upkeep to end). Metric:
/// `shoal_metrics_upkeep_duration_seconds`.
async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let handle = handle.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            handle.run_upkeep();
            started.elapsed()
        })
        .await;
        match ran {
            Ok(took) => metrics::histogram!(crate::metrics::METRICS_UPKEEP_DURATION_SECONDS)
                .record(took.as_secs_f64()),
            // Without upkeep the recorded values would pile up until the next scrape.
            Err(e) if e.is_panic() => tracing::warn!("the metrics upkeep panicked: {e}"),
            // The runtime is shutting down.
            Err(_) => return,
        }
    }
}

async fn accept(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Over the bound the connection is dropped (closed) at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused("connections");
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            serve(stream, &handle).await;
            drop(permit);
        });
    }
}

async fn serve(mut stream: TcpStream, handle: &PrometheusHandle) {
    let head = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Unread::TooLarge)) => return refused("request_too_large"),
        Ok(Err(Unread::Closed)) => return,
        Err(_) => return refused("timeout"),
    };
    // Rendering folds every value recorded since the last upkeep into the histograms
    // and formats each series: a blocking thread's work, not the runtime's.
    let handle = handle.clone();
    let Ok((status, content_type, body)) =
        tokio::task::spawn_blocking(move || answer(&head, &handle)).await
    else {
        return;
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(response.as_bytes())).await;
}

/// Count a connection closed without an answer, by why.
fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::METRICS_HTTP_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Why no request head was read.
#[derive(Debug, PartialEq, Eq)]
enum Unread {
    /// Over [`MAX_REQUEST_BYTES`] without the end of the head.
    TooLarge,
    /// The peer closed (or the read failed, or the head is not UTF-8) first.
    Closed,
}

/// Read up to the end of the request head, at most [`MAX_REQUEST_BYTES`].
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Result<String, Unread> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.map_err(|_| Unread::Closed)?;
        if n == 0 {
            return Err(Unread::Closed);
        }
        if buf.len() + n > MAX_REQUEST_BYTES {
            return Err(Unread::TooLarge);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).map_err(|_| Unread::Closed)
}

/// The status line, content type and body for a request head.
fn answer(head: &str, handle: &PrometheusHandle) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        "/health" => ("200 OK", TEXT, "ok\n".into()),
        "/ready" => match super::health::readiness() {
            Ok(()) => ("200 OK", TEXT, "ready\n".into()),
            Err(reason) => ("503 Service Unavailable", TEXT, format!("{reason}\n")),
        },
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[tokio::test]
    async fn a_head_over_the_bound_is_refused_and_a_short_one_read() {
        let long = format!("GET /{} HTTP/1.0\r\n\r\n", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(read_head(&mut long.as_bytes()).await, Err(Unread::TooLarge));
        assert_eq!(
            read_head(&mut &b"GET /ready HTTP/1.0"[..]).await,
            Err(Unread::Closed)
        );
        let head = "GET /health HTTP/1.0\r\nHost: x\r\n\r\n";
        assert_eq!(read_head(&mut head.as_bytes()).await.as_deref(), Ok(head));
    }

    #[test]
    fn paths_and_methods_get_their_status() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let status = |head: &str| answer(head, &handle).0;
        assert_eq!(status("GET /health HTTP/1.0\r\n\r\n"), "200 OK");
        assert_eq!(status("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), "200 OK");
        assert_eq!(
            status("POST /health HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        assert_eq!(status("GET /other HTTP/1.1\r\n\r\n"), "404 Not Found");
    }
}
