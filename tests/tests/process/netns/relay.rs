//! A userspace UDP relay in front of each node, on the path of all of its QUIC traffic,
//! that delays each datagram by a seeded random time: the latency and jitter (and so the
//! reordering) `tc netem` would add, for kernels without `sch_netem`.
//!
//! Peers and clients dial node `i` at the relay's address `10.X.Y.(101+i)` (the nodes'
//! member addresses say so). For each source address it sees, the relay opens a socket
//! of its own towards the node (a "flow"), so the node's answers come back to that socket
//! and are sent on to the source from the front socket: a NAT with delays. QUIC does not
//! mind that the node sees the relay's address instead of the peer's.
//!
//! It runs on a thread and runtime of its own, so that it keeps forwarding while the
//! test's thread blocks (waiting for a process to exit, say). Bounds: at most
//! [`MAX_FLOWS`] flows per node and [`MAX_DELAYED`] datagrams waiting at once; beyond
//! them datagrams are dropped and counted ([`RelayStats::overflow`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Flows (source addresses) per node: the nodes plus the test's clients, with room.
const MAX_FLOWS: usize = 256;
/// Datagrams held for a delay at once, over all nodes.
const MAX_DELAYED: usize = 16_384;
/// Largest datagram forwarded (QUIC's are at most ~1,500 bytes on this path).
const MAX_DATAGRAM: usize = 65_536;

/// What the relay did, for the test's report.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams forwarded (both directions).
    pub forwarded: AtomicU64,
    /// Datagrams delivered after one sent later on the same flow and direction.
    pub reordered: AtomicU64,
    /// Datagrams dropped because a bound was reached.
    pub overflow: AtomicU64,
}

struct Shared {
    /// Base delay and jitter (uniform in `base - jitter ..= base + jitter`, at least 0).
    delay: Mutex<(Duration, Duration)>,
    rng: Mutex<ChaCha8Rng>,
    delayed: AtomicUsize,
    stats: RelayStats,
}

impl Shared {
    fn next_delay(&self) -> Duration {
        let (base, jitter) = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if jitter.is_zero() {
            return base;
        }
        let j = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
        let offset = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..=2 * j);
        (base + Duration::from_micros(offset)).saturating_sub(jitter)
    }
}

/// Order of the datagrams of one flow in one direction.
#[derive(Default)]
struct Order {
    sent: AtomicU64,
    delivered_max: AtomicU64,
}

/// The relays of one cluster; stopped on drop.
pub struct Relay {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts one relay per `(front, target)` pair: datagrams to `front` go to `target`
    /// from a socket bound to `source_ip`, and the answers back. `seed` seeds the delays.
    pub fn start(pairs: Vec<(SocketAddr, SocketAddr)>, source_ip: IpAddr, seed: u64) -> Relay {
        let shared = Arc::new(Shared {
            delay: Mutex::new((Duration::ZERO, Duration::ZERO)),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            delayed: AtomicUsize::new(0),
            stats: RelayStats::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netns-relay".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the relay's runtime");
                rt.block_on(async move {
                    let mut fronts = Vec::new();
                    for (front, target) in pairs {
                        let socket = UdpSocket::bind(front)
                            .await
                            .unwrap_or_else(|e| panic!("binding the relay at {front}: {e}"));
                        fronts.push((Arc::new(socket), target));
                    }
                    ready_tx.send(()).expect("the test waits for the relay");
                    let mut tasks = tokio::task::JoinSet::new();
                    for (socket, target) in fronts {
                        tasks.spawn(serve(
                            socket,
                            target,
                            source_ip,
                            inner.clone(),
                            stopped.clone(),
                        ));
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })
            .expect("spawning the relay thread");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the relay binds its sockets");
        Relay {
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Delays each datagram from now on by `base` plus or minus `jitter` (uniform).
    pub fn set_delay(&self, base: Duration, jitter: Duration) {
        *self.shared.delay.lock().unwrap_or_else(|e| e.into_inner()) = (base, jitter);
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Forwards what arrives at `front` to `target`, one flow per source, until stopped.
async fn serve(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    source_ip: IpAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut flows: HashMap<SocketAddr, (Arc<UdpSocket>, Arc<Order>)> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = tokio::select! {
            _ = stop.changed() => break,
            got = front.recv_from(&mut buf) => match got {
                Ok(got) => got,
                // Linux reports no ICMP errors on unconnected UDP sockets; any other
                // error concerns one datagram, and the next is unaffected.
                Err(_) => continue,
            },
        };
        let flow = match flows.get(&from) {
            Some(flow) => flow.clone(),
            None if flows.len() < MAX_FLOWS => {
                let Ok(up) = UdpSocket::bind(SocketAddr::new(source_ip, 0)).await else {
                    shared.stats.overflow.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let up = Arc::new(up);
                let back = Arc::new(Order::default());
                tasks.spawn(answer(
                    up.clone(),
                    front.clone(),
                    from,
                    back,
                    shared.clone(),
                    stop.clone(),
                ));
                let flow = (up, Arc::new(Order::default()));
                flows.insert(from, flow.clone());
                flow
            }
            None => {
                shared.stats.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        send_later(&shared, flow.0, target, &buf[..len], &flow.1).await;
    }
    tasks.abort_all();
}

/// Sends what the node answers on flow socket `up` back to `client` from `front`.
async fn answer(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    order: Arc<Order>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = tokio::select! {
            _ = stop.changed() => return,
            got = up.recv(&mut buf) => match got {
                Ok(len) => len,
                Err(_) => continue,
            },
        };
        send_later(&shared, front.clone(), client, &buf[..len], &order).await;
    }
}

/// Sends `data` from `socket` to `to` after the relay's current delay (now, when it is
/// zero; otherwise from a task of its own, so that later datagrams may overtake it);
/// counts reordering.
async fn send_later(
    shared: &Arc<Shared>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    data: &[u8],
    order: &Arc<Order>,
) {
    let delay = shared.next_delay();
    let seq = order.sent.fetch_add(1, Ordering::Relaxed) + 1;
    let deliver = {
        let shared = shared.clone();
        let order = order.clone();
        move || {
            if order.delivered_max.fetch_max(seq, Ordering::Relaxed) > seq {
                shared.stats.reordered.fetch_add(1, Ordering::Relaxed);
            }
            shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    };
    if delay.is_zero() {
        // Awaited, not `try_send_to`: tokio reports a fresh socket as not writable until
        // its reactor has polled it, which would drop the first datagrams of a flow.
        let _ = socket.send_to(data, to).await;
        deliver();
        return;
    }
    if shared.delayed.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED {
        shared.delayed.fetch_sub(1, Ordering::Relaxed);
        shared.stats.overflow.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let shared = shared.clone();
    let data = data.to_vec();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = socket.send_to(&data, to).await;
        deliver();
        shared.delayed.fetch_sub(1, Ordering::Relaxed);
    });
}
