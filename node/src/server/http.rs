//! The metrics listener's small HTTP/1 server: `GET /metrics` (the Prometheus
//! exposition), `GET /health` (liveness) and `GET /ready` (readiness, see [`super::health`]).
//!
//! The exporter's own listener serves only the exposition, so the recorder runs without
//! it and this server renders through its handle. Bounded: at most [`MAX_CONNECTIONS`]
//! connections at once (more are closed at once), a request head of at most
//! [`MAX_REQUEST_BYTES`], and [`IO_TIMEOUT`] for reading the request and for writing the
//! answer. Every answer closes the connection.

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
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Bind `addr` and serve on it for the life of the runtime.
pub fn spawn(addr: SocketAddr, handle: PrometheusHandle) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("starting the metrics listener on {addr}"))?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(accept(listener, handle));
    Ok(())
}

async fn accept(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Over the bound the connection is dropped (closed) at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
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
    let Ok(Some(head)) = tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let (status, content_type, body) = answer(&head, handle);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(response.as_bytes())).await;
}

/// Read up to the end of the request head; `None` when it is too long or the peer
/// closes first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST_BYTES {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
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
