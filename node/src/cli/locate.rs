//! `shoal locate KEY`: where a key lives — its partition and its replicas (the preference
//! list) — computed from the ring the cluster hands the client, exactly as nodes and the
//! SDK route the key. Useful to find which node's log or disk to look at for one key.

use serde::Serialize;
use shoal_client::ClusterInfo;

/// `locate --json`'s shape.
#[derive(Serialize)]
struct LocateJson {
    key: String,
    partition: u32,
    ring_version: u64,
    n: u8,
    replicas: Vec<ReplicaJson>,
}

/// One replica of the key, in preference order.
#[derive(Serialize)]
struct ReplicaJson {
    id: String,
    /// `null` when the ring lists a node whose address the cluster did not report.
    addr: Option<String>,
}

/// Formats the partition and preference list of `key` under `info`: a JSON object (one
/// line) or `partition P (ring version V, N=n)` then one `ID ADDR` line per replica.
pub(super) fn format_locate(info: &ClusterInfo, key: &[u8], json: bool) -> String {
    let list = info
        .ring
        .preference_list_for_key(key, usize::from(info.n.max(1)));
    let replicas: Vec<ReplicaJson> = list
        .nodes
        .iter()
        .map(|id| ReplicaJson {
            id: id.to_string(),
            addr: info
                .members
                .iter()
                .find(|m| &m.id == id)
                .map(|m| m.addr.to_string()),
        })
        .collect();
    if json {
        let out = LocateJson {
            key: String::from_utf8_lossy(key).into_owned(),
            partition: list.partition.0,
            ring_version: info.ring.version(),
            n: info.n,
            replicas,
        };
        // Plain strings and numbers always serialise.
        let mut text = serde_json::to_string(&out).unwrap_or_default();
        text.push('\n');
        return text;
    }
    let mut text = format!(
        "partition {} (ring version {}, N={})\n",
        list.partition.0,
        info.ring.version(),
        info.n
    );
    let width = replicas.iter().map(|r| r.id.len()).max().unwrap_or(0);
    for r in &replicas {
        let addr = r.addr.as_deref().unwrap_or("-");
        text.push_str(&format!("{:<width$}  {addr}\n", r.id));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::{MemberAddress, NodeId};
    use shoal_ring::{Member, Ring};

    fn info() -> ClusterInfo {
        let ids: Vec<NodeId> = (1..=4)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let ring = Ring::new(16, ids.iter().cloned().map(Member::new).collect()).unwrap();
        let members = ids
            .iter()
            .enumerate()
            .map(|(i, id)| MemberAddress {
                id: id.clone(),
                addr: format!("127.0.0.1:{}", 7001 + i).parse().unwrap(),
            })
            .collect();
        ClusterInfo {
            ring,
            members,
            n: 3,
            r: 2,
            w: 2,
            layout_version: 1,
        }
    }

    #[test]
    fn locate_prints_the_ring_s_preference_list_with_addresses() {
        let info = info();
        let want = info.ring.preference_list_for_key(b"k", 3);
        let json: serde_json::Value =
            serde_json::from_str(&format_locate(&info, b"k", true)).unwrap();
        assert_eq!(json["partition"], want.partition.0);
        assert_eq!(json["key"], "k");
        let ids: Vec<&str> = json["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let want_ids: Vec<&str> = want.nodes.iter().map(|n| n.as_str()).collect();
        assert_eq!(ids, want_ids);
        let n: usize = want_ids[0][1..].parse().unwrap();
        assert_eq!(
            json["replicas"][0]["addr"],
            format!("127.0.0.1:{}", 7000 + n)
        );

        let text = format_locate(&info, b"k", false);
        let lines: Vec<&str> = text.lines().collect();
        let header = format!("partition {} (", want.partition.0);
        assert!(lines[0].starts_with(&header), "{text}");
        assert_eq!(lines.len(), 4);
        for (line, id) in lines[1..].iter().zip(&want_ids) {
            assert!(line.starts_with(id), "{line}");
        }
    }
}
