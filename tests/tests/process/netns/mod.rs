//! Real networks: each node in a network namespace of its own, on a bridge, under loss,
//! latency with jitter (reordering), and one-way and two-way partitions, with a
//! read-modify-write set workload running through it all (see [`net`] for how each
//! impairment is made, [`relay`] for the latency on kernels without `sch_netem`, and
//! [`sets`] for the workload and its check).
//!
//! Needs root (namespaces, veth pairs, iptables); CI runs as root. Elsewhere the test
//! fails with a message saying so, unless `SHOAL_SKIP_ROOT_TESTS=1` is set.
//!
//! Phases, the workload running throughout:
//! 1. baseline;
//! 2. 5% loss on every datagram delivered to a node: the failure detector is watched
//!    (members as each node reports them, and `shoal_member_state_changes_total`);
//! 3. latency 20 ms ± 15 ms per datagram, which reorders them;
//! 4. one-way partitions of n3, first it hears and nobody hears it, then the reverse:
//!    both sides see the other down each time, and all up after each heal;
//! 5. heal, then two-way partition of n3 for longer than the QUIC idle timeout: its
//!    connections close;
//! 6. heal: peers and clients reconnect within a deadline, every client writes again,
//!    hints drain and anti-entropy makes every replica equal;
//! 7. a read at R = N of every key: every acknowledged element present, none invented.
//!
//! A second test checks a defect the workload found: a put answered `Unavailable`
//! ("nothing was written") whose value was written all the same, because the quorum
//! became impossible after the coordinator's own write; such a put now answers
//! `Incomplete` ([`a_put_answered_unavailable_wrote_nothing`]).

mod net;
mod relay;
mod sets;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_client::{Client, ClientError, MemberState, NodeId, ReadOptions, WriteOptions};
use tokio::time::Instant;

use crate::harness::{
    free_port_block, pending_hints, scrape, wait_hints_drained, wait_until, Cluster, Placement,
};
use net::{Cut, DelayMechanism, Net};
use relay::Relay;
use sets::{Ledger, SetWorkload};

/// Nodes (N = 3, R = W = 2, the dev cluster's quorums).
const NODES: usize = 3;
/// The partitioned node (n3).
const VICTIM: usize = 2;
/// Client tasks of the workload, each with its own SDK client.
const CLIENTS: usize = 4;
/// Shared keys.
const KEYS: usize = 3;
/// Probability that a datagram delivered to a node is dropped in the loss phase.
const LOSS: f64 = 0.05;
/// Latency and jitter of the delay phase.
const DELAY: Duration = Duration::from_millis(20);
const JITTER: Duration = Duration::from_millis(15);
/// Length of the baseline, delay and one-way partition phases.
const PHASE: Duration = Duration::from_secs(8);
/// Length of the loss phase (long enough for many probes: 500 ms apart).
const LOSS_PHASE: Duration = Duration::from_secs(15);
/// The nodes' QUIC idle timeout (also set in [`EXTRA_TOML`]); the two-way partition
/// lasts longer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the idle timeout the partitioned node's connections must be closed
/// (detection of the partition, keep-alive period, a loaded machine).
const IDLE_MARGIN: Duration = Duration::from_secs(10);
/// Length of the two-way partition.
const TWO_WAY_PHASE: Duration = Duration::from_secs(12);
/// How often the members each node reports are sampled under loss.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Deadline for a partition to be noticed, and for peers and clients to reconnect after
/// a partition heals.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for hints to drain and anti-entropy to make the replicas equal.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Fast anti-entropy and an explicit QUIC idle timeout and keep-alive.
const EXTRA_TOML: &str = "
[aae]
interval = \"2s\"
[transport]
idle_timeout = \"5s\"
keep_alive = \"1s\"
";

/// Whether this process may make namespaces; `false` means skip (the caller returns).
pub(crate) fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("SHOAL_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: the network namespace tests need root (SHOAL_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!(
        "the network namespace tests need root (namespaces, veth pairs, iptables); \
         run as root, or set SHOAL_SKIP_ROOT_TESTS=1 to skip them"
    );
}

/// The seed of the relay's delays: `SHOAL_NETNS_SEED`, or one drawn and printed.
fn seed() -> u64 {
    std::env::var("SHOAL_NETNS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// One cluster on a network of namespaces, with the relay in front of its nodes. Fields
/// drop in order: the nodes are killed before the relay stops and the namespaces go.
struct Rig {
    cluster: Cluster,
    /// A client with a short timeout, for status polls and the final read.
    status: Client,
    relay: Relay,
    net: Net,
    /// Every node, and every node but the victim.
    all: Vec<usize>,
    others: Vec<usize>,
}

impl Rig {
    /// Makes the network, starts the relay and the cluster.
    async fn start() -> Rig {
        let net = Net::create(NODES);
        let seed = seed();
        // The nodes are alone in their namespaces, but the relays bind their ports here,
        // where a socket bound to the wildcard address could hold one.
        let base_port = free_port_block(u16::try_from(NODES).expect("few nodes"));
        let port = |i: usize| base_port + u16::try_from(i).expect("few nodes");
        let relay = Relay::start(
            (0..NODES)
                .map(|i| {
                    (
                        SocketAddr::new(net.relay_ip(i), port(i)),
                        SocketAddr::new(net.node_ip(i), port(i)),
                    )
                })
                .collect(),
            net.bridge_ip(),
            seed,
        );
        let mechanism = match net.delay_mechanism() {
            DelayMechanism::Netem => "tc netem",
            DelayMechanism::Relay => "the userspace relay (this kernel has no sch_netem)",
        };
        eprintln!(
            "netns: namespaces {:?}; loss and partitions by iptables; latency by {mechanism}; \
             relay seed {seed} (SHOAL_NETNS_SEED)",
            net.namespaces()
        );
        let placement = Placement {
            netns: net.namespaces().to_vec(),
            listen: (0..NODES).map(|i| net.node_ip(i)).collect(),
            advertise: (0..NODES).map(|i| net.relay_ip(i)).collect(),
            base_port: Some(base_port),
        };
        let cluster = Cluster::start_placed(NODES, EXTRA_TOML, &placement).await;
        let status = cluster.status_client().await;

        let all: Vec<usize> = (0..NODES).collect();
        let others = all.iter().copied().filter(|&i| i != VICTIM).collect();
        Rig {
            cluster,
            status,
            relay,
            net,
            all,
            others,
        }
    }

    /// Starts the workload: [`CLIENTS`] tasks on [`KEYS`] keys, in phase `baseline`.
    async fn start_workload(&self) -> SetWorkload {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(self.cluster.client().await);
        }

        let keys = (0..KEYS).map(|k| format!("set-{k}")).collect();
        SetWorkload::start(clients, keys, "baseline")
    }

    /// 5% loss: a healthy, reachable peer is never marked down.
    async fn loss(&self, workload: &SetWorkload) {
        workload.set_phase("loss");
        let downs_before = down_transitions(&self.cluster, &self.all).await;
        self.net.set_loss(LOSS);
        let seen = watch_members(&self.cluster, &self.status, LOSS_PHASE).await;
        let (dropped, delivered) = self.net.loss_counts();
        self.net.heal();
        let downs = down_transitions(&self.cluster, &self.all).await - downs_before;
        eprintln!(
            "netns: under {}% loss ({dropped} of {delivered} datagrams to the nodes dropped): \
             {} member samples, {} of them not up (longest run {:?}), {} status requests \
             failed, {downs} down transitions",
            LOSS * 100.0,
            seen.samples,
            seen.not_up,
            seen.longest_not_up,
            seen.status_failures
        );
        assert!(
            dropped > 0,
            "the loss rules dropped nothing of {delivered} datagrams"
        );
        assert_phase_progress(workload, "loss");
        assert!(
            seen.not_up == 0 && downs == 0.0,
            "under {}% loss the failure detector marked healthy peers down: {} of {} samples \
             not up (longest run {:?}: {:?}), {downs} down transitions",
            LOSS * 100.0,
            seen.not_up,
            seen.samples,
            seen.longest_not_up,
            seen.longest_pair
        );
        self.wait_all_up("after the loss phase").await;
    }

    /// Latency with jitter, which reorders datagrams.
    async fn delay(&self, workload: &SetWorkload) {
        workload.set_phase("delay");
        let reordered = || self.relay.stats().reordered.load(Ordering::Relaxed);
        let before = reordered();
        match self.net.delay_mechanism() {
            DelayMechanism::Netem => self.net.set_netem_delay(DELAY, JITTER),
            DelayMechanism::Relay => self.relay.set_delay(DELAY, JITTER),
        }
        hold(workload, "delay", Instant::now() + PHASE).await;
        self.net.set_netem_delay(Duration::ZERO, Duration::ZERO);
        self.relay.set_delay(Duration::ZERO, Duration::ZERO);
        let reordered = reordered() - before;
        eprintln!("netns: delay phase: the relay delivered {reordered} datagrams out of order");
        if self.net.delay_mechanism() == DelayMechanism::Relay {
            assert!(reordered > 0, "jitter of {JITTER:?} reordered no datagram");
        }
    }

    /// One-way partition of the victim as `cut` says, then heal.
    async fn one_way_partition(&self, workload: &SetWorkload, cut: Cut) {
        let phase = cut.label();
        workload.set_phase(phase);
        self.net.partition(VICTIM, cut);
        let cut_at = Instant::now();
        self.wait_partition_noticed(phase).await;
        eprintln!(
            "netns: {phase} partition of {} noticed on both sides in {:?}",
            self.cluster.id(VICTIM),
            cut_at.elapsed()
        );
        hold(workload, phase, cut_at + PHASE).await;
        self.net.heal();
        let healed = Instant::now();
        self.wait_all_up(&format!("after the {phase} partition"))
            .await;
        eprintln!(
            "netns: {phase} partition healed; all up in {:?}",
            healed.elapsed()
        );
    }

    /// Two-way partition of the victim, longer than the QUIC idle timeout: its
    /// connections close. Then heal: peers and clients reconnect, every client writes
    /// again.
    async fn two_way_partition(&self, workload: &SetWorkload) {
        workload.set_phase("two-way partition");
        self.net.partition(VICTIM, Cut::TwoWay);
        let cut_at = Instant::now();
        self.wait_partition_noticed("two-way partition").await;
        let victim_metrics = self.cluster.nodes()[VICTIM].metrics;
        let idle = wait_until(
            "the partitioned node's QUIC connections to idle out",
            IDLE_TIMEOUT + IDLE_MARGIN,
            || async move {
                let open = scrape(victim_metrics)
                    .await?
                    .sum(shoal_transport::metrics::CONNECTIONS, &[]);
                if open == 0.0 {
                    Ok(cut_at.elapsed())
                } else {
                    Err(format!("{open} connections open"))
                }
            },
        )
        .await;
        eprintln!(
            "netns: two-way partition: the victim's connections all closed {idle:?} after the cut"
        );
        hold(workload, "two-way partition", cut_at + TWO_WAY_PHASE).await;
        let hints = pending_hints(&self.status, &self.cluster.ids(&self.others))
            .await
            .unwrap_or_default();
        eprintln!("netns: hints held at the end of the two-way partition: {hints:?}");

        workload.set_phase("healed");
        self.net.heal();
        let healed = Instant::now();
        workload.mark();
        self.wait_all_up("after the two-way partition").await;
        let victim = &self.cluster.id(VICTIM);
        for (c, client) in workload.clients().iter().enumerate() {
            wait_until(
                &format!("client {c} to reach {victim} again"),
                RECONNECT_TIMEOUT,
                || async move {
                    client
                        .status(Some(victim))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
            )
            .await;
        }
        wait_until(
            "every client task to have a write acknowledged after the heal",
            RECONNECT_TIMEOUT,
            || async move {
                match workload.tasks_without_ack() {
                    idle if idle.is_empty() => Ok(()),
                    idle => Err(format!("tasks without an ack: {idle:?}")),
                }
            },
        )
        .await;
        eprintln!(
            "netns: two-way partition healed; peers up and every client reconnected and \
             writing in {:?}",
            healed.elapsed()
        );
    }

    /// Waits until hints drain and every replica is equal, reads every key at R = N and
    /// checks the sets against the ledger: no acknowledged element lost, none invented.
    async fn check(&self, ledger: &Ledger, keys: &[String]) {
        let ids = self.cluster.ids(&self.all);
        let stopped = Instant::now();
        wait_hints_drained(&self.status, &ids, CONVERGE_TIMEOUT).await;
        wait_replicas_equal(&self.status, &ids).await;
        eprintln!(
            "netns: hints drained and every replica equal {:?} after the workload stopped",
            stopped.elapsed()
        );
        let r = u8::try_from(NODES).expect("few nodes");
        let mut finals = BTreeMap::new();
        for key in keys {
            let read = self
                .status
                .get_with(key)
                .options(ReadOptions::default().r(r))
                .send()
                .await
                .unwrap_or_else(|e| panic!("the final read of {key} at R = {NODES}: {e}"));
            finals.insert(key.clone(), sets::union(&read.values));
        }
        let verdict = sets::verify(ledger, &finals);
        for (phase, counts) in &ledger.phases {
            eprintln!("netns: phase {phase:<18} {counts:?}");
        }
        let stats = self.relay.stats();
        eprintln!(
            "netns: workload: {} acknowledged, {} lost, {} of unknown outcome landed, {} did \
             not, {} invented; errors by kind {:?}; relay \
             forwarded {} datagrams, dropped {} at its bounds",
            verdict.acked,
            verdict.lost.len(),
            verdict.unknown_found,
            verdict.unknown_missing,
            verdict.invented.len(),
            ledger.errors,
            stats.forwarded.load(Ordering::Relaxed),
            stats.overflow.load(Ordering::Relaxed),
        );
        assert!(
            verdict.lost.is_empty(),
            "{} of {} acknowledged elements lost; first: {:?}",
            verdict.lost.len(),
            verdict.acked,
            &verdict.lost[..verdict.lost.len().min(10)]
        );
        assert!(
            verdict.invented.is_empty(),
            "{} elements found that were never written; first: {:?}",
            verdict.invented.len(),
            &verdict.invented[..verdict.invented.len().min(10)]
        );
    }

    /// Waits until every node sees every member up.
    async fn wait_all_up(&self, when: &str) {
        wait_until(
            &format!("every node to see every member up {when}"),
            RECONNECT_TIMEOUT,
            || {
                self.cluster
                    .views_agree(&self.status, &self.all, &self.all, MemberState::Up)
            },
        )
        .await;
    }

    /// Waits until the others see the victim down, and the victim sees them down (read
    /// from its metrics: its UDP is cut, its TCP metrics endpoint is not).
    async fn wait_partition_noticed(&self, phase: &str) {
        let victims = &[VICTIM];
        wait_until(
            &format!("the others to see the victim down ({phase})"),
            RECONNECT_TIMEOUT,
            || {
                self.cluster
                    .views_agree(&self.status, &self.others, victims, MemberState::Down)
            },
        )
        .await;
        let addr = self.cluster.nodes()[VICTIM].metrics;
        let others = (NODES - 1) as f64;
        wait_until(
            &format!("the partitioned node to see the others down ({phase})"),
            RECONNECT_TIMEOUT,
            || async move {
                let down = scrape(addr)
                    .await?
                    .sum(shoal_proto::metrics::MEMBERS, &[("state", "down")]);
                if down == others {
                    Ok(())
                } else {
                    Err(format!("it sees {down} members down"))
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_workload_keeps_every_acknowledged_add_under_loss_delay_and_partitions() {
    if !root_or_skip() {
        return;
    }
    let began = Instant::now();
    let rig = Rig::start().await;
    let workload = rig.start_workload().await;
    eprintln!("netns: cluster and clients up in {:?}", began.elapsed());
    hold(&workload, "baseline", Instant::now() + PHASE).await;
    rig.loss(&workload).await;
    rig.delay(&workload).await;
    rig.one_way_partition(&workload, Cut::OneWayOut).await;
    rig.one_way_partition(&workload, Cut::OneWayIn).await;
    rig.two_way_partition(&workload).await;
    let keys = workload.keys().to_vec();
    let ledger = workload.stop().await;
    rig.check(&ledger, &keys).await;
    rig.status.close().await;
    eprintln!("netns: done in {:?}", began.elapsed());
}

/// Keeps the network as it is until `until` while the workload runs: the length of a
/// phase is how long the workload is exposed to its fault, not a wait for some state.
/// Then checks that the workload made progress in `phase`.
async fn hold(workload: &SetWorkload, phase: &str, until: Instant) {
    tokio::time::sleep_until(until).await;
    assert_phase_progress(workload, phase);
}

/// Panics unless the workload had acknowledged adds in `phase`.
fn assert_phase_progress(workload: &SetWorkload, phase: &str) {
    let counts = workload.phase_counts(phase);
    assert!(
        counts.acked > 0,
        "no add acknowledged during phase {phase}: {counts:?}"
    );
}

/// What [`watch_members`] saw.
#[derive(Debug, Default)]
struct MemberWatch {
    /// (reporter, member) samples, a reporter's view of itself excluded.
    samples: u64,
    /// Samples in which the member was not up.
    not_up: u64,
    /// Status requests that failed (no sample).
    status_failures: u64,
    /// Longest run of consecutive not-up samples of one pair, and which pair.
    longest_not_up: Duration,
    longest_pair: Option<(NodeId, NodeId)>,
}

/// Samples, every [`SAMPLE_EVERY`] for `duration`, how every node sees every other.
async fn watch_members(cluster: &Cluster, status: &Client, duration: Duration) -> MemberWatch {
    let mut seen = MemberWatch::default();
    let mut since: BTreeMap<(NodeId, NodeId), Instant> = BTreeMap::new();
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    while Instant::now() < end {
        tick.tick().await;
        for i in 0..cluster.len() {
            let reporter = cluster.id(i);
            let Ok(report) = status.status(Some(&reporter)).await else {
                seen.status_failures += 1;
                continue;
            };
            for m in report.members.iter().filter(|m| m.id != reporter) {
                seen.samples += 1;
                let pair = (reporter.clone(), m.id.clone());
                if m.state == MemberState::Up {
                    since.remove(&pair);
                    continue;
                }
                seen.not_up += 1;
                let run = since
                    .entry(pair.clone())
                    .or_insert_with(Instant::now)
                    .elapsed();
                if run >= seen.longest_not_up {
                    seen.longest_not_up = run;
                    seen.longest_pair = Some(pair);
                }
            }
        }
    }
    seen
}

/// Down transitions counted by the nodes `indices` so far.
async fn down_transitions(cluster: &Cluster, indices: &[usize]) -> f64 {
    let name = shoal_proto::metrics::MEMBER_STATE_CHANGES_TOTAL;
    wait_until("the nodes' metrics", RECONNECT_TIMEOUT, || {
        cluster.metric_sum(indices, name, &[("state", "down")])
    })
    .await
}

/// Waits until every node reports the same Merkle root for every partition (hints and
/// anti-entropy have made the replicas equal, the healed node included).
async fn wait_replicas_equal(status: &Client, ids: &[NodeId]) {
    wait_until(
        "every replica of every partition to hold the same data",
        CONVERGE_TIMEOUT,
        || async move {
            let mut roots: BTreeMap<u32, BTreeSet<(u64, u64)>> = BTreeMap::new();
            for id in ids {
                let report = status
                    .aae_status(Some(id))
                    .await
                    .map_err(|e| format!("aae status of {id}: {e}"))?;
                for p in report.partitions {
                    roots
                        .entry(p.partition.0)
                        .or_default()
                        .insert((p.root, p.keys));
                }
            }
            let differing: Vec<u32> = roots
                .iter()
                .filter(|(_, r)| r.len() > 1)
                .map(|(p, _)| *p)
                .collect();
            if differing.is_empty() {
                Ok(())
            } else {
                Err(format!("partitions whose replicas differ: {differing:?}"))
            }
        },
    )
    .await;
}

/// A put answered `Unavailable` must have written nothing: the SDK documents it so
/// (`ClientError::Unavailable`: "nothing was written") and never retries it, so a
/// client that reads the answer as "not written" may write something else in its place.
///
/// Put with W = 3 right after n3 is cut off, before the coordinator notices: the
/// coordinator writes its own copy, the other healthy replica acknowledges, the copy to
/// n3 fails and no fallback is left, so W can no longer be met. The answer must then
/// say that the outcome is unknown (`Incomplete`), or the value must not be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_answered_unavailable_wrote_nothing() {
    if !root_or_skip() {
        return;
    }
    let rig = Rig::start().await;
    let client = rig.cluster.client().await;
    let all = u8::try_from(NODES).expect("few nodes");
    let key = "unavailable-probe";
    rig.net.partition(VICTIM, Cut::TwoWay);
    let put = client
        .put_with(key, "v1")
        .context(None)
        .options(WriteOptions::default().w(all))
        .send()
        .await;
    eprintln!("netns: a put at W = {all} right after the cut answered {put:?}");
    assert!(
        put.is_err(),
        "W = {all} was met with {} cut off",
        rig.cluster.id(VICTIM)
    );
    rig.net.heal();
    rig.wait_all_up("after the heal").await;
    if let Err(ClientError::Unavailable { .. }) = put {
        let read = rig
            .status
            .get_with(key)
            .options(ReadOptions::default().r(all))
            .send()
            .await
            .unwrap_or_else(|e| panic!("reading {key} at R = {all}: {e}"));
        assert!(
            !read.found,
            "the put was answered Unavailable (\"nothing was written\"), but the key holds {:?}",
            read.values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
        );
    }
    client.close().await;
    rig.status.close().await;
}

/// The default datagram bound (9,000 bytes) on an Ethernet-sized network: every link here
/// carries 1,500 bytes, so path MTU discovery's larger probes are refused at the sender
/// and the datagrams stay at about 1,450 bytes. A multi-megabyte value written to every
/// replica and read back from every one crosses intact, within the client's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_crosses_an_ethernet_sized_network_with_the_default_datagram_bound() {
    if !root_or_skip() {
        return;
    }
    let rig = Rig::start().await;
    for i in rig.all.clone() {
        let mtu = rig.net.exec(i, "cat", &["/sys/class/net/eth0/mtu"]);
        assert_eq!(mtu.trim(), "1500", "{}'s link", rig.cluster.id(i));
    }
    let client = rig.cluster.client().await;
    let all = u8::try_from(NODES).expect("few nodes");
    let value: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    client
        .put_with("large-over-ethernet", value.clone())
        .context(None)
        .options(WriteOptions::default().w(all))
        .send()
        .await
        .unwrap_or_else(|e| panic!("a 3 MiB put at W = {all}: {e}"));
    let read = client
        .get_with("large-over-ethernet")
        .options(ReadOptions::default().r(all))
        .send()
        .await
        .unwrap_or_else(|e| panic!("reading the 3 MiB value at R = {all}: {e}"));
    assert_eq!(read.values.len(), 1, "one version");
    assert!(read.values[0] == value, "the value read back differs");
    client.close().await;
    rig.status.close().await;
}
