//! A network of namespaces: one namespace per node, each with a veth pair whose host
//! end is a port of one bridge in this (the test's) namespace, and the impairments the
//! tests put on it.
//!
//! Addresses: the subnet `10.X.Y.0/24` (X and Y from this process's pid and a counter,
//! checked unused), node `i` (0-based) at `10.X.Y.(i+1)` on `eth0` of its namespace, the
//! bridge at `10.X.Y.254`, and the relay in front of node `i` at `10.X.Y.(101+i)`, an
//! extra address of the bridge (see [`super::relay`]).
//!
//! Impairments act on UDP only (all of Shoal's node and client traffic is QUIC), so
//! that the TCP metrics endpoint of a partitioned node stays readable by the test:
//! - loss: `iptables -m statistic --mode random` drops in each node's `INPUT` chain,
//!   so each datagram delivered to a node is lost with the probability;
//! - partitions: `iptables` drops in one node's `OUTPUT` chain (one-way: it hears
//!   everyone, nobody hears it), its `INPUT` chain (one-way: everyone hears it, it hears
//!   nobody), or both (two-way);
//! - latency, jitter and the reordering jitter causes: `tc netem` on each node's
//!   `eth0` when the kernel has `sch_netem` (probed), otherwise the relay delays each
//!   datagram ([`DelayMechanism`]).
//!
//! Everything is removed on drop (namespaces take their veth pairs and rules with them),
//! also when the test panics.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Namespaces made by this process so far: part of the names and the subnet, so that
/// two networks of one test binary differ.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// How latency and jitter are put on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayMechanism {
    /// The kernel's `sch_netem` qdisc on each node's interface (egress).
    Netem,
    /// The userspace relay in front of each node delays every datagram it forwards.
    Relay,
}

/// Which way a partitioned node's traffic is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The node receives everything, but nothing it sends arrives.
    OneWayOut,
    /// Everything the node sends arrives, but it receives nothing.
    OneWayIn,
    /// Nothing arrives in either direction.
    TwoWay,
}

impl Cut {
    /// A name for output.
    pub fn label(self) -> &'static str {
        match self {
            Cut::OneWayOut => "one-way (unheard)",
            Cut::OneWayIn => "one-way (deaf)",
            Cut::TwoWay => "two-way",
        }
    }
}

/// The namespaces, veth pairs and bridge of one test; removed on drop.
#[derive(Debug)]
pub struct Net {
    /// `10.X.Y`.
    prefix: [u8; 3],
    bridge: String,
    bridge_made: bool,
    /// Node `i`'s namespace.
    namespaces: Vec<String>,
    delay: DelayMechanism,
}

/// Runs `program args`; `Err` holds the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`run`], panicking on failure.
fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

impl Net {
    /// Creates the bridge and one namespace per node, and probes for `sch_netem`.
    pub fn create(nodes: usize) -> Net {
        assert!((1..=100).contains(&nodes), "1..=100 nodes, got {nodes}");
        let pid = std::process::id();
        let serial = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}x{serial}");
        let mut net = Net {
            prefix: free_prefix(pid, serial),
            bridge: format!("shb{tag}"),
            bridge_made: false,
            namespaces: Vec::new(),
            delay: DelayMechanism::Relay,
        };
        assert!(
            net.bridge.len() <= 15,
            "interface name {} too long",
            net.bridge
        );
        must("ip", &["link", "add", &net.bridge, "type", "bridge"]);
        net.bridge_made = true;
        let host = net.bridge_ip();
        must(
            "ip",
            &["addr", "add", &format!("{host}/24"), "dev", &net.bridge],
        );
        for i in 0..nodes {
            let relay = net.relay_ip(i);
            must(
                "ip",
                &["addr", "add", &format!("{relay}/32"), "dev", &net.bridge],
            );
        }
        must("ip", &["link", "set", &net.bridge, "up"]);
        for i in 0..nodes {
            let ns = format!("shoal-{tag}-n{}", i + 1);
            // A namespace of a killed earlier run with the same pid would be in the way.
            let _ = run("ip", &["netns", "del", &ns]);
            must("ip", &["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let host_end = format!("shv{tag}n{}", i + 1);
            let node_end = format!("shp{tag}n{}", i + 1);
            must(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
                ],
            );
            must("ip", &["link", "set", &node_end, "netns", &ns]);
            must(
                "ip",
                &["link", "set", &host_end, "master", &net.bridge, "up"],
            );
            let ip = net.node_ip(i);
            net.exec(i, "ip", &["link", "set", &node_end, "name", "eth0"]);
            net.exec(
                i,
                "ip",
                &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            );
            net.exec(i, "ip", &["link", "set", "eth0", "up"]);
            net.exec(i, "ip", &["link", "set", "lo", "up"]);
        }
        let probe = ["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"];
        if net.try_exec(0, "tc", &probe).is_ok() {
            net.exec(0, "tc", &["qdisc", "del", "dev", "lo", "root"]);
            net.delay = DelayMechanism::Netem;
        }
        net
    }

    /// How this network puts latency on packets.
    pub fn delay_mechanism(&self) -> DelayMechanism {
        self.delay
    }

    /// The namespaces, node `i`'s at `i`.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Node `i`'s address, on `eth0` of its namespace.
    pub fn node_ip(&self, i: usize) -> IpAddr {
        let last = u8::try_from(i + 1).expect("at most 100 nodes");
        self.ip(last)
    }

    /// The address of the relay in front of node `i`, in this namespace.
    pub fn relay_ip(&self, i: usize) -> IpAddr {
        let last = u8::try_from(101 + i).expect("at most 100 nodes");
        self.ip(last)
    }

    /// The bridge's address in this namespace (the relay's source address towards nodes).
    pub fn bridge_ip(&self) -> IpAddr {
        self.ip(254)
    }

    fn ip(&self, last: u8) -> IpAddr {
        let [a, b, c] = self.prefix;
        IpAddr::V4(Ipv4Addr::new(a, b, c, last))
    }

    fn try_exec(&self, i: usize, program: &str, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["netns", "exec", &self.namespaces[i], program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> String {
        self.try_exec(i, program, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn iptables(&self, i: usize, rule: &[&str]) {
        let mut args = vec!["-w"];
        args.extend_from_slice(rule);
        self.exec(i, "iptables", &args);
    }

    /// Drops each UDP datagram delivered to any node with probability `p`. A rule
    /// before the dropping one counts every datagram, for [`Net::loss_counts`].
    pub fn set_loss(&self, p: f64) {
        let p = format!("{p}");
        for i in 0..self.namespaces.len() {
            self.iptables(i, &["-A", "INPUT", "-p", "udp"]);
            self.iptables(
                i,
                &[
                    "-A",
                    "INPUT",
                    "-p",
                    "udp",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// UDP datagrams delivered to the nodes and dropped by [`Net::set_loss`]'s rules
    /// so far: `(dropped, total)`.
    pub fn loss_counts(&self) -> (u64, u64) {
        let (mut dropped, mut total) = (0, 0);
        for i in 0..self.namespaces.len() {
            let listing = self.exec(i, "iptables", &["-w", "-L", "INPUT", "-v", "-n", "-x"]);
            // Rows after the two header lines: pkts bytes target prot ...; the counting
            // rule has no target, so its second field after the bytes is the protocol.
            for row in listing.lines().skip(2) {
                let fields: Vec<&str> = row.split_whitespace().collect();
                let Some(packets) = fields.first().and_then(|p| p.parse::<u64>().ok()) else {
                    continue;
                };
                match fields.get(2) {
                    Some(&"DROP") => dropped += packets,
                    Some(&"udp") | Some(&"17") => total += packets,
                    _ => {}
                }
            }
        }
        (dropped, total)
    }

    /// Cuts node `i` off from everyone (its UDP traffic), as `cut` says.
    pub fn partition(&self, i: usize, cut: Cut) {
        self.iptables(
            i,
            &["-A", "OUTPUT", "-o", "eth0", "-p", "udp", "-j", "DROP"],
        );
        if cut == Cut::TwoWay {
            self.iptables(i, &["-A", "INPUT", "-i", "eth0", "-p", "udp", "-j", "DROP"]);
        }
    }

    /// Removes every loss and partition rule.
    pub fn heal(&self) {
        for i in 0..self.namespaces.len() {
            self.iptables(i, &["-F", "INPUT"]);
            self.iptables(i, &["-F", "OUTPUT"]);
        }
    }

    /// With [`DelayMechanism::Netem`]: delays every packet each node sends by `base`
    /// plus or minus `jitter` (uniform), or removes the delay when `base` is zero. With
    /// the relay mechanism this does nothing: the caller sets the relay's delay.
    pub fn set_netem_delay(&self, base: Duration, jitter: Duration) {
        if self.delay != DelayMechanism::Netem {
            return;
        }
        for i in 0..self.namespaces.len() {
            if base.is_zero() {
                let _ = self.try_exec(i, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            } else {
                let (b, j) = (
                    format!("{}ms", base.as_millis()),
                    format!("{}ms", jitter.as_millis()),
                );
                self.exec(
                    i,
                    "tc",
                    &[
                        "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &b, &j,
                    ],
                );
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        if self.bridge_made {
            if let Err(e) = run("ip", &["link", "del", &self.bridge]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// A `10.X.Y` prefix derived from `pid` and `serial` that no interface of this
/// namespace uses yet.
fn free_prefix(pid: u32, serial: u32) -> [u8; 3] {
    let used = must("ip", &["-4", "-o", "addr", "show"]);
    let mut seed = pid
        .wrapping_mul(7919)
        .wrapping_add(serial.wrapping_mul(104_729));
    for _ in 0..1000 {
        let [_, _, x, y] = seed.to_be_bytes();
        // 10.64.0.0 .. 10.191.255.0: away from the low 10.0.x networks that tools pick.
        let prefix = [10, 64 + x % 128, y];
        let text = format!("inet {}.{}.{}.", prefix[0], prefix[1], prefix[2]);
        if !used.contains(&text) {
            return prefix;
        }
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    }
    panic!("no free 10.X.Y.0/24 subnet found");
}
