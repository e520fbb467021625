//! `shoal-hostile`: one kind of hostile client run against a cluster for a bounded time,
//! for the hostile-client tests and for benchmarks of a well-behaved workload next to
//! it. Every loop is bounded in count and in time, and only the seeds of the client
//! config (loopback in tests) are contacted.
//!
//! ```text
//! shoal-hostile --config shoal-dev/client.toml --kind half-frames --duration 10s --json
//! ```
//!
//! It prints a summary: how many hostile actions it made and how each ended (the label
//! of the node's answer or of the transport error).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use shoal_client::ClientConfig;
use shoal_proto::wire::{
    decode_response, encode_request, ClientRequest, ClientResponse, PeerRequest, ReadOptions,
    Request, Response, WriteOptions,
};
use shoal_transport::{
    test_util::{raw_connection, CertlessDialer},
    Endpoint, StreamErrorCode, TlsIdentity, TransportConfig,
};
use tokio::{task::JoinSet, time::Instant};

/// What the hostile client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// Gets and puts whose timeout is the largest a `Duration` holds.
    HugeTimeouts,
    /// Up to 1,024 streams per connection that announce 1 MiB, send 100 bytes and stop.
    HalfFrames,
    /// Gets whose responses are never read.
    UnreadResponses,
    /// Thousands of connections under one client certificate.
    ManyConnections,
    /// Handshakes without a client certificate, as fast as they go.
    HandshakeFlood,
    /// Oversized, truncated, trailing and garbage frames.
    MalformedFrames,
    /// Node-to-node messages sent with a client certificate.
    PeerMessages,
    /// `status` and `aae status` requests, as fast as they go.
    StatusFlood,
}

#[derive(Parser, Debug)]
#[command(
    name = "shoal-hostile",
    about = "A bounded hostile client, for tests and benchmarks"
)]
struct Args {
    /// Client config (seeds and TLS files); every seed is a target.
    #[arg(long)]
    config: PathBuf,
    /// The kind of abuse.
    #[arg(long, value_enum)]
    kind: Kind,
    /// How long to keep at it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Hostile actions in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Upper bound on hostile actions (requests, streams, connections, handshakes).
    #[arg(long, default_value_t = 100_000)]
    max_actions: u64,
    /// Connections the `many-connections` kind opens (each holds one socket).
    #[arg(long, default_value_t = 2_000)]
    connections: usize,
    /// Streams held open at once per connection by `half-frames` and
    /// `unread-responses` (a node allows 1,024 by default).
    #[arg(long, default_value_t = 1024)]
    streams: usize,
    /// How long, after `duration`, streams still open wait for the node's verdict
    /// (its read or write deadline) before they are dropped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    grace: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Outcomes by label, shared by the tasks of a run.
#[derive(Default, Clone)]
struct Tally(Arc<Mutex<BTreeMap<String, u64>>>);

impl Tally {
    fn add(&self, label: impl Into<String>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(label.into()).or_insert(0) += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Serialize)]
struct Summary {
    kind: Kind,
    actions: u64,
    seconds: f64,
    outcomes: BTreeMap<String, u64>,
}

/// What every kind needs.
struct Run {
    identity: TlsIdentity,
    endpoint: Endpoint,
    targets: Vec<SocketAddr>,
    deadline: Instant,
    tally: Tally,
    args: Args,
}

impl Run {
    fn target(&self, i: u64) -> SocketAddr {
        self.targets[(i % self.targets.len() as u64) as usize]
    }

    fn live(&self) -> bool {
        Instant::now() < self.deadline
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ClientConfig::load(&args.config).context("loading the client config")?;
    if config.seeds.is_empty() {
        bail!("the client config lists no seeds");
    }
    let identity = TlsIdentity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)
        .context("loading the client identity")?;
    let endpoint = Endpoint::client(&identity, TransportConfig::default())?;
    let start = Instant::now();
    let run = Arc::new(Run {
        identity,
        endpoint,
        targets: config
            .seeds
            .iter()
            .map(|seed| match seed {
                shoal_client::Seed::Addr(addr) => Ok(*addr),
                other => Err(anyhow::anyhow!("seed {other} is not an address")),
            })
            .collect::<anyhow::Result<_>>()?,
        deadline: start + args.duration,
        tally: Tally::default(),
        args,
    });
    let actions = match run.args.kind {
        Kind::HugeTimeouts => requests(&run, huge_timeout_request).await,
        Kind::PeerMessages => requests(&run, peer_message).await,
        Kind::StatusFlood => requests(&run, status_request).await,
        Kind::HalfFrames => half_frames(&run).await?,
        Kind::UnreadResponses => unread_responses(&run).await?,
        Kind::ManyConnections => many_connections(&run).await,
        Kind::HandshakeFlood => handshake_flood(&run).await?,
        Kind::MalformedFrames => malformed_frames(&run).await?,
    };
    run.endpoint.close().await;
    let summary = Summary {
        kind: run.args.kind,
        actions,
        seconds: start.elapsed().as_secs_f64(),
        outcomes: run.tally.snapshot(),
    };
    if run.args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{:?}: {} actions in {:.1} s",
            summary.kind, summary.actions, summary.seconds
        );
        for (label, count) in &summary.outcomes {
            println!("  {label}: {count}");
        }
    }
    Ok(())
}

/// The label of a node's answer.
fn answer_label(bytes: &[u8]) -> String {
    match decode_response(bytes).map(Response::unstamped) {
        Ok(Response::Error(e)) | Ok(Response::Client(ClientResponse::Error(e))) => {
            // The variant's name, e.g. `error:InvalidOptions`.
            let debug = format!("{e:?}");
            let variant = debug.split(['(', ' ', '{']).next().unwrap_or("unknown");
            format!("error:{variant}")
        }
        Ok(Response::Client(_) | Response::Stamped { .. }) => "answered".to_owned(),
        Ok(Response::Peer(_)) => "peer_answer".to_owned(),
        Err(_) => "undecodable".to_owned(),
    }
}

fn huge_timeout_request(i: u64) -> Request {
    let key = format!("hostile-{}", i % 1024).into_bytes();
    if i % 2 == 0 {
        Request::Client(ClientRequest::Get {
            key,
            options: ReadOptions {
                timeout: Some(Duration::MAX),
                ..ReadOptions::default()
            },
        })
    } else {
        Request::Client(ClientRequest::Put {
            key,
            value: vec![0; 4096],
            context: None,
            options: WriteOptions {
                timeout: Some(Duration::from_secs(u64::MAX / 2)),
                ..WriteOptions::default()
            },
        })
    }
}

fn peer_message(i: u64) -> Request {
    match i % 2 {
        0 => Request::Peer(PeerRequest::Ping),
        _ => Request::Peer(PeerRequest::Forward(ClientRequest::Status)),
    }
}

fn status_request(i: u64) -> Request {
    match i % 4 {
        3 => Request::Client(ClientRequest::AaeStatus),
        _ => Request::Client(ClientRequest::Status),
    }
}

/// Sends encoded requests through the normal transport, `concurrency` at a time.
async fn requests(run: &Arc<Run>, make: fn(u64) -> Request) -> u64 {
    let r = run.clone();
    flood(run, run.args.max_actions, move |i| {
        let run = r.clone();
        async move {
            let payload = encode_request(&make(i));
            match run
                .endpoint
                .request(run.target(i), None, payload, Duration::from_secs(5))
                .await
            {
                Ok(bytes) => answer_label(&bytes),
                Err(e) => format!("transport:{}", e.label()),
            }
        }
    })
    .await
}

/// Runs `action(0)`, `action(1)`, ... `concurrency` at a time until the end of the run
/// or `limit` actions, tallying the label each returns; returns how many ran.
async fn flood<F, Fut>(run: &Arc<Run>, limit: u64, action: F) -> u64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    let action = Arc::new(action);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..run.args.concurrency {
        let (run, next, action) = (run.clone(), next.clone(), action.clone());
        tasks.spawn(async move {
            let mut done = 0u64;
            while run.live() {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                done += 1;
                let label = action(i).await;
                run.tally.add(label);
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.unwrap_or(0);
    }
    total
}

/// Streams that announce 1 MiB, send 100 bytes and stop, up to `--streams` open per
/// target connection; each waits for the node to give up on it, then another takes its place.
async fn half_frames(run: &Arc<Run>) -> anyhow::Result<u64> {
    let mut frame = (1024u32 * 1024).to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x5a; 100]);
    stream_abuse(
        run,
        run.args.streams,
        move |_| frame.clone(),
        Verdict::Stopped,
    )
    .await
}

/// Keys the `unread-responses` kind writes first, each with a [`BIG_VALUE_BYTES`] value,
/// so that every unread response is large enough to fill the stream's flow-control
/// window and leave the node holding the rest.
const BIG_KEYS: u64 = 16;
const BIG_VALUE_BYTES: usize = 1024 * 1024;

/// A length-prefixed request frame.
fn frame(request: &Request) -> Vec<u8> {
    let payload = encode_request(request);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// Complete get requests of large values whose responses are never read: up to
/// `--streams` streams per connection held open until the end of the run (or until the node gives up
/// on writing them).
async fn unread_responses(run: &Arc<Run>) -> anyhow::Result<u64> {
    for i in 0..BIG_KEYS {
        let put = Request::Client(ClientRequest::Put {
            key: format!("hostile-big-{i}").into_bytes(),
            value: vec![0xa5; BIG_VALUE_BYTES],
            context: None,
            options: WriteOptions::default(),
        });
        let label = match run
            .endpoint
            .request(
                run.target(i),
                None,
                encode_request(&put),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(bytes) => answer_label(&bytes),
            Err(e) => format!("transport:{}", e.label()),
        };
        run.tally.add(format!("setup_put:{label}"));
    }
    let make = |i: u64| {
        frame(&Request::Client(ClientRequest::Get {
            key: format!("hostile-big-{}", i % BIG_KEYS).into_bytes(),
            options: ReadOptions::default(),
        }))
    };
    stream_abuse(run, run.args.streams, make, Verdict::HoldUnread).await
}

/// How a stream of [`stream_abuse`] ends, and what its outcome label says.
#[derive(Clone, Copy)]
enum Verdict {
    /// The stream is left unfinished; wait for the node to stop it (its read deadline or
    /// an admission refusal).
    Stopped,
    /// The stream is finished and its response is never read: it is held until the end
    /// of the run unless the node resets it (its write deadline).
    HoldUnread,
    /// The stream is finished and the node's answer read: a response, a reset or a stop.
    Answer,
}

/// Opens up to `per_connection` streams on one raw connection per target, writes `make(i)`
/// on each and ends it as `verdict` says, then reuses its slot.
async fn stream_abuse(
    run: &Arc<Run>,
    per_connection: usize,
    make: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
    verdict: Verdict,
) -> anyhow::Result<u64> {
    let make = Arc::new(make);
    let mut actions = 0u64;
    let mut per_target = JoinSet::new();
    for (t, &addr) in run.targets.iter().enumerate() {
        let connection = raw_connection(&run.endpoint, addr).await?;
        let run = run.clone();
        let make = make.clone();
        per_target.spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(per_connection));
            let mut streams = JoinSet::new();
            let mut i = t as u64;
            let mut opened = 0u64;
            while run.live() && opened < run.args.max_actions {
                let Ok(Ok(slot)) =
                    tokio::time::timeout_at(run.deadline, slots.clone().acquire_owned()).await
                else {
                    break;
                };
                let Ok(Ok((mut send, mut recv))) =
                    tokio::time::timeout_at(run.deadline, connection.open_bi()).await
                else {
                    run.tally.add("open_failed");
                    break;
                };
                opened += 1;
                i += run.targets.len() as u64;
                let bytes = make(i);
                let tally = run.tally.clone();
                let (deadline, grace) = (run.deadline, run.deadline + run.args.grace);
                streams.spawn(async move {
                    let _slot = slot;
                    if send.write_all(&bytes).await.is_err() {
                        tally.add("write_refused");
                        return;
                    }
                    let label = match verdict {
                        Verdict::Stopped => stopped_label(&mut send, grace).await,
                        Verdict::HoldUnread => {
                            let _ = send.finish();
                            match tokio::time::timeout_at(deadline, recv.received_reset()).await {
                                Ok(Ok(Some(code))) => reset_label(code),
                                Ok(Ok(None)) => "closed".to_owned(),
                                Ok(Err(_)) => "connection_lost".to_owned(),
                                Err(_) => "held_unread".to_owned(),
                            }
                        }
                        Verdict::Answer => {
                            let _ = send.finish();
                            answer_read_label(&mut send, &mut recv, grace).await
                        }
                    };
                    drop(recv.stop(0u32.into()));
                    tally.add(label);
                });
            }
            while streams.join_next().await.is_some() {}
            connection.close(0u32.into(), b"done");
            opened
        });
    }
    while let Some(done) = per_target.join_next().await {
        actions += done.unwrap_or(0);
    }
    Ok(actions)
}

/// The label of the node's `stop` of our sending side, waited for until `until`.
async fn stopped_label(send: &mut quinn::SendStream, until: Instant) -> String {
    match tokio::time::timeout_at(until, send.stopped()).await {
        Ok(Ok(Some(code))) => {
            format!("stopped:{}", StreamErrorCode::from_code(code.into_inner()))
        }
        Ok(Ok(None)) => "finished".to_owned(),
        Ok(Err(_)) => "connection_lost".to_owned(),
        Err(_) => "still_open".to_owned(),
    }
}

fn reset_label(code: quinn::VarInt) -> String {
    format!("reset:{}", StreamErrorCode::from_code(code.into_inner()))
}

/// The node's answer to a finished request stream, read until `until`: the label of the
/// response it sent, or of the reset or stop that ended the stream instead.
async fn answer_read_label(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    until: Instant,
) -> String {
    match tokio::time::timeout_at(until, recv.read_to_end(1 << 20)).await {
        Err(_) => "no_answer".to_owned(),
        Ok(Ok(bytes)) if bytes.len() > 4 => answer_label(&bytes[4..]),
        // Ended without a response: the node stopped reading our side.
        Ok(Ok(_)) => stopped_label(send, until).await,
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))) => reset_label(code),
        Ok(Err(_)) => "read_failed".to_owned(),
    }
}

/// Connections under one certificate, `concurrency` being opened at a time: each a new
/// endpoint (its own socket) making one request and then held open until the end of
/// the run.
async fn many_connections(run: &Arc<Run>) -> u64 {
    let limit = (run.args.connections as u64).min(run.args.max_actions);
    let held = Arc::new(Mutex::new(Vec::new()));
    let (r, h) = (run.clone(), held.clone());
    let done = flood(run, limit, move |i| {
        let (run, held) = (r.clone(), h.clone());
        async move {
            let endpoint = match Endpoint::client(&run.identity, TransportConfig::default()) {
                Ok(e) => e,
                Err(e) => return format!("local:{}", e.label()),
            };
            let payload = encode_request(&Request::Client(ClientRequest::ClusterInfo));
            let label = match endpoint
                .request(run.target(i), None, payload, Duration::from_secs(5))
                .await
            {
                Ok(bytes) => answer_label(&bytes),
                Err(e) => format!("transport:{}", e.label()),
            };
            held.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(endpoint);
            label
        }
    })
    .await;
    // Holding the connections open until the end of the run is the abuse.
    tokio::time::sleep_until(run.deadline).await;
    let held = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
    let mut closing = JoinSet::new();
    for endpoint in held {
        closing.spawn(async move { endpoint.close().await });
    }
    while closing.join_next().await.is_some() {}
    done
}

/// Handshakes without a client certificate, `concurrency` at a time.
async fn handshake_flood(run: &Arc<Run>) -> anyhow::Result<u64> {
    let dialer = Arc::new(CertlessDialer::new(&run.identity)?);
    let (r, d) = (run.clone(), dialer.clone());
    let done = flood(run, run.args.max_actions, move |i| {
        let (run, dialer) = (r.clone(), d.clone());
        async move {
            match dialer
                .try_connect(run.target(i), Duration::from_secs(2))
                .await
            {
                Ok(()) => "served_without_certificate".to_owned(),
                Err(_) => "refused".to_owned(),
            }
        }
    })
    .await;
    dialer.close();
    Ok(done)
}

/// Oversized prefixes, truncated frames, trailing bytes, and well-framed garbage.
async fn malformed_frames(run: &Arc<Run>) -> anyhow::Result<u64> {
    let make = |i: u64| -> Vec<u8> {
        match i % 4 {
            // Announces 4 GiB - 1.
            0 => u32::MAX.to_be_bytes().to_vec(),
            // Announces 10 bytes, sends 3, finishes.
            1 => vec![0, 0, 0, 10, 1, 2, 3],
            // A complete 1-byte frame and a trailing byte.
            2 => vec![0, 0, 0, 1, 7, 8],
            // A well-formed frame of garbage.
            _ => {
                let body: Vec<u8> = (0..64)
                    .map(|b| (b as u8).wrapping_mul(31) ^ i as u8)
                    .collect();
                let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&body);
                frame
            }
        }
    };
    stream_abuse(run, 64, make, Verdict::Answer).await
}
