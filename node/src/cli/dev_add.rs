//! `shoal dev add`: writes the next node of an existing `shoal dev` cluster, so that a new
//! user can grow it by hand: start the node, `shoal cluster join` it, `plan`, `commit`.
//!
//! The new node gets a certificate from the dev CA, the next free ports (QUIC and
//! metrics) and the existing nodes as its bootstrap `[[seeds]]`. Its own id is not among
//! them, so it starts as a candidate: it holds no partitions until a committed layout
//! makes it a member.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use shoal_ring::NodeId;

use super::dev::{node_configs, node_toml, report, UsageError};
use crate::config::NodeConfig;

/// Most ports tried past the highest one in use before giving up.
const MAX_PORT_PROBES: u16 = 1000;

/// What `shoal dev add` wrote.
#[derive(Debug)]
pub struct Added {
    /// The new node's id.
    pub id: NodeId,
    /// Its config file.
    pub config: PathBuf,
    /// Its QUIC address.
    pub listen: SocketAddr,
    /// Its metrics address.
    pub metrics: SocketAddr,
    /// The addresses of its bootstrap contacts.
    pub seeds: Vec<SocketAddr>,
}

/// The existing nodes of `dir`, parsed but not validated: a node added earlier is a
/// candidate whose config a node of this release may not accept yet, and only its id
/// and ports matter here.
fn existing(dir: &Path) -> anyhow::Result<Vec<NodeConfig>> {
    if !dir.join("client.toml").is_file() {
        return Err(UsageError(format!(
            "{} is not a dev cluster directory (no client.toml); run `shoal dev init --dir {}` first",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    node_configs(dir)?
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<NodeConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))
        })
        .collect()
}

/// `n<k>` for the first k past every `n<number>` id in use whose directory does not
/// exist either.
fn next_id(dir: &Path, nodes: &[NodeConfig]) -> anyhow::Result<NodeId> {
    let highest = nodes
        .iter()
        .filter_map(|c| c.id.as_str().strip_prefix('n')?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let taken: BTreeSet<&str> = nodes.iter().map(|c| c.id.as_str()).collect();
    (highest + 1..highest + 1 + u32::from(MAX_PORT_PROBES))
        .map(|k| format!("n{k}"))
        .find(|id| !taken.contains(id.as_str()) && !dir.join(id).exists())
        .map(NodeId::new)
        .transpose()?
        .context("no free node id")
}

/// The first port after `after` that is in `used` by no node of the cluster and that
/// `free` says can be bound now.
fn next_port(after: u16, used: &BTreeSet<u16>, free: impl Fn(u16) -> bool) -> anyhow::Result<u16> {
    (1..=MAX_PORT_PROBES)
        .filter_map(|i| after.checked_add(i))
        .find(|p| !used.contains(p) && free(*p))
        .with_context(|| format!("no free port among the {MAX_PORT_PROBES} after {after}"))
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Writes the next node of the dev cluster in `dir`.
pub fn add(dir: &Path) -> anyhow::Result<Added> {
    let nodes = existing(dir)?;
    let first = nodes.first().context("the dev cluster has no node")?;
    let id = next_id(dir, &nodes)?;
    let quic_used: BTreeSet<u16> = nodes.iter().map(|c| c.listen.port()).collect();
    let metrics_used: BTreeSet<u16> = nodes
        .iter()
        .filter_map(|c| c.metrics_listen.map(|a| a.port()))
        .collect();
    // Both kinds of port are kept apart from each other as well.
    let all: BTreeSet<u16> = quic_used.union(&metrics_used).copied().collect();
    let quic = next_port(quic_used.last().copied().unwrap_or(7000), &all, udp_free)?;
    let metrics_after = metrics_used.last().copied().unwrap_or(9100);
    let mut metrics_avoid = all.clone();
    metrics_avoid.insert(quic);
    let metrics = next_port(metrics_after, &metrics_avoid, tcp_free)?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, quic));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics));
    let seeds: Vec<(NodeId, SocketAddr)> = nodes.iter().map(|c| (c.id.clone(), c.listen)).collect();
    let node_dir = dir.join(id.as_str());
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    shoal_transport::certs::issue_node_cert(dir, &id, &node_dir)?;
    let r = &first.replication;
    let toml = node_toml(
        &id,
        listen,
        metrics.port(),
        first.partitions,
        &seeds,
        (r.n, r.r, r.w),
        "Not among its own seeds: it starts as a candidate and holds no partitions until \
         `shoal cluster join` and `commit` make it a member.",
    );
    let config = node_dir.join("node.toml");
    std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
    Ok(Added {
        id,
        config,
        listen,
        metrics,
        seeds: seeds.into_iter().map(|(_, a)| a).collect(),
    })
}

/// `shoal dev add`: the id on stdout (one JSON object with `--json`), what to do next on
/// stderr.
pub fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let added = add(dir)?;
    let client = dir.join("client.toml");
    report(
        json,
        || added.id.to_string(),
        || {
            serde_json::json!({
                "event": "add",
                "dir": dir,
                "id": added.id.as_str(),
                "config": added.config,
                "quic": added.listen,
                "metrics": format!("http://{}/metrics", added.metrics),
                "seeds": added.seeds,
            })
        },
    );
    eprintln!(
        "wrote {} (quic {}, metrics {}); next:\n  shoal node --config {}\n  \
         shoal --config {} cluster join {}\n  shoal --config {} cluster plan\n  \
         shoal --config {} cluster commit --version V   (V: the version `plan` prints)",
        added.config.display(),
        added.listen,
        added.metrics,
        added.config.display(),
        client.display(),
        added.id,
        client.display(),
        client.display(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::dev::{init, DevArgs};
    use crate::config::{ConfigError, SeedConfig};
    use shoal_transport::TlsIdentity;

    fn init_three(dir: &Path) {
        init(&DevArgs {
            action: None,
            dir: dir.to_owned(),
            nodes: Some(3),
            base_port: 47001,
            metrics_base_port: 49101,
            json: true,
        })
        .unwrap();
    }

    /// The config of an added node loads; while node configs must list their own node
    /// among the seeds (before candidate start-up, i9-agree), that is the only objection,
    /// and with itself listed it validates in full.
    fn load_candidate(added: &Added) -> NodeConfig {
        match NodeConfig::load(&added.config) {
            Ok(cfg) => cfg,
            Err(ConfigError::Field { field, problem })
                if field == "seeds" && problem.contains("must be one of the members") =>
            {
                let text = std::fs::read_to_string(&added.config).unwrap();
                let mut cfg: NodeConfig = toml::from_str(&text).unwrap();
                cfg.base_dir = added.config.parent().unwrap().to_owned();
                let mut member = cfg.clone();
                member.seeds.push(SeedConfig {
                    id: added.id.clone(),
                    addr: added.listen,
                    zone: None,
                    weight: 1,
                });
                member.validate().unwrap();
                cfg
            }
            Err(e) => panic!("{}: {e}", added.config.display()),
        }
    }

    #[test]
    fn add_writes_the_next_candidate_node_with_its_own_ports_and_certificate() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cluster");
        init_three(&dir);
        let founders: Vec<SocketAddr> = (47001..=47003)
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .collect();
        let first = add(&dir).unwrap();
        let second = add(&dir).unwrap();
        assert_eq!(first.id.as_str(), "n4");
        assert_eq!(second.id.as_str(), "n5");
        let mut ports = BTreeSet::new();
        for p in (47001..=47003).chain(49101..=49103) {
            ports.insert(p);
        }
        for added in [&first, &second] {
            assert!(ports.insert(added.listen.port()), "{added:?}");
            assert!(ports.insert(added.metrics.port()), "{added:?}");
            let cfg = load_candidate(added);
            assert_eq!(cfg.id, added.id);
            assert_eq!(cfg.listen, added.listen);
            assert_eq!(cfg.metrics_listen, Some(added.metrics));
            assert_eq!(cfg.partitions, 64);
            assert_eq!(
                (cfg.replication.n, cfg.replication.r, cfg.replication.w),
                (3, 2, 2)
            );
            assert!(
                cfg.seeds.iter().all(|s| s.id != added.id),
                "its own id is not a seed: it starts as a candidate"
            );
            let seeds: Vec<SocketAddr> = cfg.seeds.iter().map(|s| s.addr).collect();
            assert_eq!(&seeds[..3], &founders[..], "the founders are its contacts");
            // The certificate is the dev CA's, for this id.
            let identity = TlsIdentity::load(
                &cfg.resolve(&cfg.tls.ca),
                &cfg.resolve(&cfg.tls.cert),
                &cfg.resolve(&cfg.tls.key),
            )
            .unwrap();
            assert_eq!(identity.role().node_id(), Some(&added.id));
        }
        // The second also has the first as a contact.
        assert_eq!(second.seeds.len(), 4);
        assert_eq!(second.seeds[3], first.listen);
    }

    #[test]
    fn add_outside_a_dev_cluster_is_a_usage_error() {
        let root = tempfile::tempdir().unwrap();
        let err = add(root.path()).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(err.to_string().contains("shoal dev init"), "{err:#}");
        assert!(std::fs::read_dir(root.path()).unwrap().next().is_none());
    }

    #[test]
    fn ports_skip_those_in_use_and_those_taken() {
        let used: BTreeSet<u16> = [7001, 7002, 7004].into();
        assert_eq!(next_port(7002, &used, |_| true).unwrap(), 7003);
        assert_eq!(next_port(7002, &used, |p| p != 7003).unwrap(), 7005);
        assert!(next_port(7002, &used, |_| false).is_err());
        assert!(next_port(u16::MAX, &used, |_| true).is_err());
    }
}
