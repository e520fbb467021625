//! `shoal status`'s output: one JSON object, or a table of the members as one node sees them.

use serde::Serialize;
use shoal_client::StatusReport;

/// `status`'s JSON form.
#[derive(Serialize)]
struct StatusJson {
    node: String,
    ring_version: u64,
    members: Vec<MemberJson>,
    storage: StorageJson,
}

/// The reporting node's own storage in `status --json`.
#[derive(Serialize)]
struct StorageJson {
    disk_full: bool,
    free_bytes: Option<u64>,
}

#[derive(Serialize)]
struct MemberJson {
    id: String,
    addr: String,
    state: &'static str,
    partitions_owned: usize,
    pending_hints: u64,
    pending_hint_bytes: u64,
}

pub(super) fn format_status_json(report: &StatusReport) -> String {
    let json = StatusJson {
        node: report.node.to_string(),
        ring_version: report.ring_version,
        members: report
            .members
            .iter()
            .map(|m| MemberJson {
                id: m.id.to_string(),
                addr: m.addr.to_string(),
                state: m.state.as_str(),
                partitions_owned: m.partitions_owned,
                pending_hints: m.pending_hints,
                pending_hint_bytes: m.pending_hint_bytes,
            })
            .collect(),
        storage: StorageJson {
            disk_full: report.storage.disk_full,
            free_bytes: report.storage.free_bytes,
        },
    };
    // Plain strings and numbers always serialise.
    let mut text = serde_json::to_string(&json).unwrap_or_default();
    text.push('\n');
    text
}

/// A table with one row per member, after a line naming the reporting node and, when its
/// disk is full, a warning line.
pub(super) fn format_status_table(report: &StatusReport) -> String {
    let header = [
        "MEMBER",
        "ADDRESS",
        "STATE",
        "PARTITIONS",
        "PENDING HINTS",
        "HINT BYTES",
    ];
    let rows: Vec<[String; 6]> = report
        .members
        .iter()
        .map(|m| {
            [
                m.id.to_string(),
                m.addr.to_string(),
                m.state.as_str().to_owned(),
                m.partitions_owned.to_string(),
                m.pending_hints.to_string(),
                m.pending_hint_bytes.to_string(),
            ]
        })
        .collect();
    let mut text = format!(
        "as seen by {} (ring version {})\n",
        report.node, report.ring_version
    );
    if report.storage.disk_full {
        let free = report
            .storage
            .free_bytes
            .map_or_else(String::new, |free| format!(" ({free} bytes free)"));
        text.push_str(&format!(
            "DISK FULL: {} refuses writes until space is freed on its data directory{free}; reads are served\n",
            report.node
        ));
    }
    text.push_str(&table(header, &rows));
    text
}

/// A table: a header line, then one line per row, columns left-aligned to their widest
/// cell, two spaces apart, no trailing blanks.
pub(super) fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::{MemberState, MemberStatus, NodeId, StorageHealth};

    fn report() -> StatusReport {
        StatusReport {
            node: NodeId::new("n1").unwrap(),
            ring_version: 4,
            members: vec![
                MemberStatus {
                    id: NodeId::new("n1").unwrap(),
                    addr: "127.0.0.1:7001".parse().unwrap(),
                    state: MemberState::Up,
                    partitions_owned: 86,
                    pending_hints: 0,
                    pending_hint_bytes: 0,
                },
                MemberStatus {
                    id: NodeId::new("node-two").unwrap(),
                    addr: "127.0.0.1:7002".parse().unwrap(),
                    state: MemberState::Down,
                    partitions_owned: 85,
                    pending_hints: 12,
                    pending_hint_bytes: 3456,
                },
            ],
            storage: StorageHealth {
                disk_full: false,
                free_bytes: Some(1 << 30),
            },
        }
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let text = format_status_json(&report());
        assert_eq!(text.lines().count(), 1);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "node": "n1",
                "ring_version": 4,
                "members": [
                    {"id": "n1", "addr": "127.0.0.1:7001", "state": "up",
                     "partitions_owned": 86, "pending_hints": 0, "pending_hint_bytes": 0},
                    {"id": "node-two", "addr": "127.0.0.1:7002", "state": "down",
                     "partitions_owned": 85, "pending_hints": 12, "pending_hint_bytes": 3456},
                ],
                "storage": {"disk_full": false, "free_bytes": 1073741824},
            })
        );
    }

    #[test]
    fn status_table_warns_when_the_reporting_node_s_disk_is_full() {
        let mut full = report();
        full.storage = StorageHealth {
            disk_full: true,
            free_bytes: Some(4096),
        };
        let text = format_status_table(&full);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[1].starts_with("DISK FULL: n1 refuses writes"),
            "{text}"
        );
        assert!(lines[1].contains("(4096 bytes free)"), "{text}");
        assert!(lines[2].starts_with("MEMBER"), "{text}");
        // Without a full disk there is no such line.
        assert!(!format_status_table(&report()).contains("DISK FULL"));
    }

    #[test]
    fn status_table_has_a_row_per_member_with_aligned_columns() {
        let text = format_status_table(&report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "as seen by n1 (ring version 4)");
        assert!(lines[1].starts_with("MEMBER    ADDRESS"), "{text}");
        let fields: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            fields,
            ["node-two", "127.0.0.1:7002", "down", "85", "12", "3456"]
        );
        // Columns line up: each column starts at the same offset in every row.
        let col = lines[1].find("STATE").unwrap();
        assert_eq!(&lines[2][col..col + 2], "up");
        assert_eq!(&lines[3][col..col + 4], "down");
    }
}
