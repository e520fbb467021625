//! `shoal backup` (ask a running node for a checkpoint of its store) and `shoal restore`
//! (fill a stopped node's data directory from one).
//!
//! A backup of any age restores: the node starts from it in restore mode (see
//! `shoal_proto`'s `engine/restore.rs` and docs/ARCHITECTURE.md, *Deletes and
//! tombstones*), serving nothing until, for each of its partitions, an anti-entropy
//! exchange with another replica has replaced its copies with that replica's (the peer's
//! copy wins every difference), so a value deleted since the backup, even one whose
//! tombstone was reaped cluster-wide, never comes back. The restored node starts under a
//! new actor (every open mints one), so no dot is minted twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::wire::{
    decode_response, encode_request, BackupReply, ClientRequest, ClientResponse, Request, Response,
};
use shoal_ring::NodeId;
use shoal_transport::{Endpoint, TlsIdentity};

use crate::server::backup::{
    unix_micros, Manifest, RestoredMarker, DB_DIR, MANIFEST_FILE, MANIFEST_FORMAT, RESTORED_MARKER,
};

/// How long `shoal backup` waits for the node's answer (a checkpoint flushes memtables
/// and links files: seconds at most).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why `shoal restore` refused or failed; nothing in the data directory was changed
/// unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup has no readable manifest.
    #[error("{path}: not a Shoal backup ({reason})")]
    NotABackup {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest format this build does not read.
    #[error(
        "backup manifest format {found} is not supported (this build reads {MANIFEST_FORMAT})"
    )]
    Format {
        /// The format found.
        found: u32,
    },
    /// The data directory holds files and `--force` was not given.
    #[error("{0} is not empty; stop the node and pass --force to replace its contents")]
    NotEmpty(PathBuf),
    /// Reading the backup or writing the data directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_owned();
    move |source| RestoreError::Io { what, path, source }
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(backup: &Path) -> Result<Manifest, RestoreError> {
    let path = backup.join(MANIFEST_FILE);
    let not_a_backup = |reason: String| RestoreError::NotABackup {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| not_a_backup(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| not_a_backup(e.to_string()))?;
    let format = value["format"].as_u64().unwrap_or(0);
    if format != u64::from(MANIFEST_FORMAT) {
        return Err(RestoreError::Format {
            found: u32::try_from(format).unwrap_or(u32::MAX),
        });
    }
    serde_json::from_value(value).map_err(|e| not_a_backup(e.to_string()))
}

/// `shoal restore`: checks the backup, then replaces `data_dir`'s contents with it and
/// leaves the restore marker the node checks at start.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    force: bool,
) -> Result<RestoredMarker, RestoreError> {
    let manifest = read_manifest(backup)?;
    let db = backup.join(DB_DIR);
    let files: Vec<std::fs::DirEntry> = std::fs::read_dir(&db)
        .map_err(io("reading", &db))?
        .collect::<Result<_, _>>()
        .map_err(io("reading", &db))?;
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("reading", data_dir)(e)),
    };
    if occupied {
        if !force {
            return Err(RestoreError::NotEmpty(data_dir.to_owned()));
        }
        std::fs::remove_dir_all(data_dir).map_err(io("removing", data_dir))?;
    }
    std::fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
    for entry in files {
        let to = data_dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).map_err(io("copying to", &to))?;
    }
    let marker = RestoredMarker {
        from: backup.to_owned(),
        manifest,
        restored_at_micros: unix_micros(),
    };
    let path = data_dir.join(RESTORED_MARKER);
    let text = serde_json::to_string_pretty(&marker).unwrap_or_default();
    std::fs::write(&path, text).map_err(io("writing", &path))?;
    Ok(marker)
}

/// Prints a restore's outcome.
pub fn format_restored(marker: &RestoredMarker, data_dir: &Path, json: bool) -> String {
    if json {
        serde_json::json!({
            "data_dir": data_dir,
            "from": marker.from,
            "node": marker.manifest.node.as_str(),
            "taken_at_micros": marker.manifest.taken_at_micros,
        })
        .to_string()
    } else {
        format!(
            "restored {} (node {}) into {}; start the node: it runs under a new actor, and \
             serves once each of its partitions matches another replica's copy",
            marker.from.display(),
            marker.manifest.node,
            data_dir.display()
        )
    }
}

/// Prints a backup's outcome.
pub fn format_backup(reply: &BackupReply, json: bool) -> String {
    if json {
        serde_json::json!({
            "path": reply.path,
            "node": reply.node.as_str(),
            "taken_at_micros": reply.taken_at_micros,
            "bytes": reply.bytes,
        })
        .to_string()
    } else {
        format!(
            "node {} wrote its backup to {} ({} bytes)",
            reply.node, reply.path, reply.bytes
        )
    }
}

/// `shoal backup`: asks node `node` (through the client config) to write the backup
/// `name` under its backup directory. Returns the exit code.
pub async fn backup(config: Option<PathBuf>, node: &str, name: &str, json: bool) -> i32 {
    let node = match NodeId::new(node) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("error: --node: {e}");
            return 2;
        }
    };
    match request_backup(config, &node, name).await {
        Ok(Ok(reply)) => {
            println!("{}", format_backup(&reply, json));
            0
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            1
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn request_backup(
    config: Option<PathBuf>,
    node: &NodeId,
    name: &str,
) -> anyhow::Result<Result<BackupReply, shoal_proto::RequestError>> {
    use anyhow::Context as _;
    let path = super::client::resolve_config_path(config);
    let config = shoal_client::ClientConfig::load(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    let client = shoal_client::Client::connect(config.clone()).await?;
    let info = client.cluster_info().await;
    client.close().await;
    let addr = info
        .members
        .iter()
        .find(|m| m.id == *node)
        .map(|m| m.addr)
        .with_context(|| format!("{node} is not a member of the cluster"))?;
    let identity = TlsIdentity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let endpoint = Endpoint::client(&identity, shoal_transport::TransportConfig::default())?;
    let request = encode_request(&Request::Client(ClientRequest::Backup {
        name: name.to_owned(),
    }));
    let answer = endpoint
        .request(addr, Some(node), request, BACKUP_TIMEOUT)
        .await;
    endpoint.close().await;
    match decode_response(&answer?)? {
        Response::Client(ClientResponse::Backup(reply)) => Ok(Ok(reply)),
        Response::Client(ClientResponse::Error(e)) | Response::Error(e) => Ok(Err(e)),
        other => anyhow::bail!("unexpected answer to a backup request: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(taken_at_micros: u64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            node: NodeId::new("n1").unwrap(),
            taken_at_micros,
            tombstone_grace_seconds: 3600.0,
            max_clock_skew_seconds: 10.0,
            partitions: 64,
            n: 3,
        }
    }

    #[test]
    fn restore_refuses_a_non_empty_directory_unless_forced_and_takes_an_old_backup() {
        let root = tempfile::tempdir().unwrap();
        let backup = root.path().join("b");
        std::fs::create_dir_all(backup.join(DB_DIR)).unwrap();
        std::fs::write(backup.join(DB_DIR).join("CURRENT"), "x").unwrap();
        let fresh = manifest(unix_micros());
        std::fs::write(
            backup.join(MANIFEST_FILE),
            serde_json::to_string(&fresh).unwrap(),
        )
        .unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("old"), "o").unwrap();
        assert!(matches!(
            restore(&backup, &data, false),
            Err(RestoreError::NotEmpty(_))
        ));
        assert!(data.join("old").exists());
        let marker = restore(&backup, &data, true).unwrap();
        assert_eq!(marker.manifest, fresh);
        assert!(!data.join("old").exists());
        assert_eq!(std::fs::read_to_string(data.join("CURRENT")).unwrap(), "x");
        assert!(data.join(RESTORED_MARKER).exists());

        let old = manifest(unix_micros() - 7200 * 1_000_000);
        std::fs::write(
            backup.join(MANIFEST_FILE),
            serde_json::to_string(&old).unwrap(),
        )
        .unwrap();
        // Older than the tombstone grace period: restored too (the node restores it in
        // restore mode, where its peers' copies win).
        let other = root.path().join("other");
        assert_eq!(restore(&backup, &other, false).unwrap().manifest, old);
        assert!(other.join(RESTORED_MARKER).exists());
        let other = root.path().join("another");
        std::fs::write(backup.join(MANIFEST_FILE), "{\"format\": 9}").unwrap();
        assert!(matches!(
            restore(&backup, &other, true),
            Err(RestoreError::Format { found: 9 })
        ));
    }
}
