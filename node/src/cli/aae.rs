//! `shoal aae status`: anti-entropy state of every partition, gathered from every member.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use shoal_client::{AaeReport, Client, ClientConfig, NodeId};

use super::client::resolve_config_path;

/// `shoal aae` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AaeCommand {
    /// Per partition, each replica's Merkle root, key count and last exchange.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// One replica of a partition in `aae status --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReplicaJson {
    /// The node holding the replica.
    pub node: String,
    /// Its Merkle root, 16 hex digits.
    pub root: String,
    /// Keys in its tree.
    pub keys: u64,
    /// When its most recent exchange (as initiator) ended, in Unix milliseconds.
    pub last_exchange_unix_ms: Option<u64>,
    /// The peer of that exchange.
    pub last_exchange_peer: Option<String>,
    /// How it ended (`ok: N keys repaired` or `failed: ...`).
    pub last_result: Option<String>,
    /// Seconds since the least recent of its pairs last exchanged successfully, by the
    /// node's own clock (`None`: no successful exchange recorded). Under load this stays
    /// within a few `aae.interval`s; see `shoal_aae_last_exchange_age_seconds`.
    pub last_ok_age_seconds: Option<u64>,
}

/// One partition in `aae status --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PartitionJson {
    /// The partition.
    pub partition: u32,
    /// Whether every replica that answered has the same root.
    pub equal: bool,
    /// The replicas that answered.
    pub replicas: Vec<ReplicaJson>,
}

/// The whole `aae status --json` document.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AaeStatusJson {
    /// Every partition, in order.
    pub partitions: Vec<PartitionJson>,
    /// Members that could not be asked.
    pub unreachable: Vec<String>,
}

/// Combine the reports of several nodes into one document.
pub fn combine(reports: &[AaeReport], unreachable: Vec<String>) -> AaeStatusJson {
    let mut by_partition: BTreeMap<u32, Vec<ReplicaJson>> = BTreeMap::new();
    for r in reports {
        for p in &r.partitions {
            let last = p.exchanges.iter().max_by_key(|e| e.at);
            let oldest_ok = p
                .exchanges
                .iter()
                .map(|e| e.last_ok)
                .min()
                .flatten()
                .map(|t| r.now.saturating_since(t).as_secs());
            by_partition
                .entry(p.partition.0)
                .or_default()
                .push(ReplicaJson {
                    node: r.node.to_string(),
                    root: format!("{:016x}", p.root),
                    keys: p.keys,
                    last_exchange_unix_ms: last.map(|e| e.at.as_micros() / 1000),
                    last_exchange_peer: last.map(|e| e.peer.to_string()),
                    last_result: last.map(|e| e.result.clone()),
                    last_ok_age_seconds: oldest_ok,
                });
        }
    }
    AaeStatusJson {
        partitions: by_partition
            .into_iter()
            .map(|(partition, replicas)| PartitionJson {
                partition,
                equal: replicas.windows(2).all(|w| w[0].root == w[1].root),
                replicas,
            })
            .collect(),
        unreachable,
    }
}

fn table(doc: &AaeStatusJson) -> String {
    let mut out = String::from(
        "PARTITION  EQUAL  NODE  ROOT              KEYS      LAST OK  LAST EXCHANGE\n",
    );
    for p in &doc.partitions {
        for (i, r) in p.replicas.iter().enumerate() {
            let (part, equal) = if i == 0 {
                (p.partition.to_string(), if p.equal { "yes" } else { "NO" })
            } else {
                (String::new(), "")
            };
            let age = r
                .last_ok_age_seconds
                .map_or_else(|| "-".to_owned(), |s| format!("{s}s ago"));
            out.push_str(&format!(
                "{part:<10} {equal:<6} {:<5} {} {:<9} {age:<8} {}\n",
                r.node,
                r.root,
                r.keys,
                r.last_result.as_deref().unwrap_or("-")
            ));
        }
    }
    let differing = doc.partitions.iter().filter(|p| !p.equal).count();
    out.push_str(&format!(
        "{} partitions, {} with differing roots\n",
        doc.partitions.len(),
        differing
    ));
    for u in &doc.unreachable {
        out.push_str(&format!("warning: could not ask {u}\n"));
    }
    out
}

/// Run `shoal aae ...`; returns the exit code.
pub async fn run(cmd: AaeCommand, config: Option<PathBuf>) -> anyhow::Result<i32> {
    let AaeCommand::Status { json } = cmd;
    let path = resolve_config_path(config);
    let cfg = match ClientConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let client = Client::connect(cfg).await?;
    let members: Vec<NodeId> = client
        .cluster_info()
        .await
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut reports = Vec::new();
    let mut unreachable = Vec::new();
    for id in members {
        match client.aae_status(Some(&id)).await {
            Ok(r) => reports.push(r),
            Err(e) => unreachable.push(format!("{id}: {e}")),
        }
    }
    client.close().await;
    let doc = combine(&reports, unreachable);
    if json {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        print!("{}", table(&doc));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::{AaeExchangeStatus, AaePartitionStatus};
    use shoal_proto::Time;
    use shoal_ring::PartitionId;

    fn report(node: &str, roots: &[(u32, u64)]) -> AaeReport {
        AaeReport {
            node: NodeId::new(node).unwrap(),
            partitions: roots
                .iter()
                .map(|&(p, root)| AaePartitionStatus {
                    partition: PartitionId(p),
                    root,
                    keys: 3,
                    exchanges: vec![AaeExchangeStatus {
                        peer: NodeId::new("zz").unwrap(),
                        at: Time::from_micros(5_000_000),
                        result: "ok: 0 keys repaired".into(),
                        keys_repaired: 0,
                        last_ok: Some(Time::from_micros(4_000_000)),
                    }],
                })
                .collect(),
            now: Time::from_micros(9_000_000),
        }
    }

    #[test]
    fn combine_groups_replicas_by_partition_and_flags_differing_roots() {
        let doc = combine(
            &[
                report("a", &[(0, 1), (1, 7)]),
                report("b", &[(0, 1), (1, 8)]),
            ],
            vec!["c: down".into()],
        );
        assert_eq!(doc.partitions.len(), 2);
        assert!(doc.partitions[0].equal);
        assert!(!doc.partitions[1].equal);
        assert_eq!(doc.partitions[1].replicas[0].root, "0000000000000007");
        assert_eq!(
            doc.partitions[0].replicas[1].last_exchange_unix_ms,
            Some(5000)
        );
        assert_eq!(doc.partitions[0].replicas[1].last_ok_age_seconds, Some(5));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["partitions"][0]["partition"], 0);
        assert_eq!(json["partitions"][0]["replicas"][0]["node"], "a");
        assert_eq!(json["unreachable"][0], "c: down");
        assert!(table(&doc).contains("1 with differing roots"));
    }
}
