//! `shoal backup`: a consistent checkpoint of the running node's store, written by the
//! node itself on a client's request, only under its `storage.backup_dir`.
//!
//! A backup is a directory `<backup_dir>/<name>/` holding `db/` (a RocksDB checkpoint:
//! every write acknowledged before it, hard links to the table files on the same
//! filesystem) and [`MANIFEST_FILE`] (which node, when, and the cluster settings then;
//! the node a backup restores into must be the one it was taken of). It is written as
//! `.<name>.partial` and renamed into place when complete, so a backup that exists is
//! whole. Names are single plain path components: a client can never make the node
//! write anywhere else, and never over an existing backup. One backup at a time per node.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shoal_proto::wire::{BackupReply, ClientResponse};
use shoal_proto::{BackupError, RequestError};
use shoal_ring::NodeId;
use shoal_storage::RocksStorage;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::metrics::{BACKUPS_TOTAL, BACKUP_DURATION_SECONDS};

/// The manifest file of a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The checkpoint's directory within a backup directory.
pub const DB_DIR: &str = "db";
/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// What a backup says about itself (`manifest.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The node backed up: a backup restores only into that node's data directory.
    pub node: NodeId,
    /// When the checkpoint was taken, microseconds since the Unix epoch (node clock).
    pub taken_at_micros: u64,
    /// `replication.tombstone_grace` of the node then, in seconds.
    pub tombstone_grace_seconds: f64,
    /// `replication.max_clock_skew` of the node then, in seconds.
    pub max_clock_skew_seconds: f64,
    /// Ring partitions, and replicas per key (N).
    pub partitions: u32,
    /// Replicas per key.
    pub n: u8,
}

/// Makes backups of one node's store.
pub(crate) struct Backups {
    root: PathBuf,
    storage: Arc<RocksStorage>,
    template: Manifest,
    busy: AtomicBool,
}

impl Backups {
    pub(crate) fn new(cfg: &NodeConfig, storage: Arc<RocksStorage>) -> Backups {
        Backups {
            root: cfg.backup_root(),
            storage,
            template: Manifest {
                format: MANIFEST_FORMAT,
                node: cfg.id.clone(),
                taken_at_micros: 0,
                tombstone_grace_seconds: cfg.replication.tombstone_grace.as_secs_f64(),
                max_clock_skew_seconds: cfg.replication.max_clock_skew.as_secs_f64(),
                partitions: cfg.partitions,
                n: cfg.replication.n,
            },
            busy: AtomicBool::new(false),
        }
    }

    /// Serves a backup request: the answer to send back. Counted by result in
    /// `shoal_backups_total`, timed in `shoal_backup_duration_seconds`.
    pub(crate) async fn serve(self: &Arc<Self>, name: String) -> ClientResponse {
        let start = Instant::now();
        let result = if self.busy.swap(true, Ordering::AcqRel) {
            Err(BackupError::InProgress)
        } else {
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.write(&name))
                .await
                .unwrap_or_else(|e| Err(BackupError::Failed(format!("backup task: {e}"))));
            self.busy.store(false, Ordering::Release);
            result
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(BackupError::Failed(_)) => "failed",
            Err(_) => "refused",
        };
        metrics::counter!(BACKUPS_TOTAL, "result" => label).increment(1);
        metrics::histogram!(BACKUP_DURATION_SECONDS).record(start.elapsed().as_secs_f64());
        match result {
            Ok(reply) => {
                info!(path = %reply.path, bytes = reply.bytes, "backup written");
                ClientResponse::Backup(reply)
            }
            Err(e) => {
                warn!("backup not made: {e}");
                ClientResponse::Error(RequestError::Backup(e))
            }
        }
    }

    /// Writes the backup `name` (blocking).
    fn write(&self, name: &str) -> Result<BackupReply, BackupError> {
        let outside = || BackupError::OutsideRoot {
            name: name.to_owned(),
            root: self.root.display().to_string(),
        };
        if !is_plain_name(name) {
            return Err(outside());
        }
        let failed =
            |what: &str, e: &dyn std::fmt::Display| BackupError::Failed(format!("{what}: {e}"));
        std::fs::create_dir_all(&self.root)
            .map_err(|e| failed(&format!("creating {}", self.root.display()), &e))?;
        let path = self.root.join(name);
        if path.exists() {
            return Err(BackupError::Exists {
                path: path.display().to_string(),
            });
        }
        let partial = self.root.join(format!(".{name}.partial"));
        // A leftover of a backup interrupted by a crash: never a complete backup.
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .map_err(|e| failed(&format!("removing {}", partial.display()), &e))?;
        }
        let result = self.write_partial(&partial, &path);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        result
    }

    fn write_partial(&self, partial: &Path, path: &Path) -> Result<BackupReply, BackupError> {
        let failed =
            |what: String, e: &dyn std::fmt::Display| BackupError::Failed(format!("{what}: {e}"));
        std::fs::create_dir(partial)
            .map_err(|e| failed(format!("creating {}", partial.display()), &e))?;
        let taken_at_micros = unix_micros();
        self.storage
            .checkpoint(&partial.join(DB_DIR))
            .map_err(|e| failed("checkpoint".into(), &e))?;
        let manifest = Manifest {
            taken_at_micros,
            ..self.template.clone()
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| failed("encoding the manifest".into(), &e))?;
        write_synced(&partial.join(MANIFEST_FILE), text.as_bytes())
            .map_err(|e| failed("writing the manifest".into(), &e))?;
        std::fs::rename(partial, path)
            .map_err(|e| failed(format!("renaming to {}", path.display()), &e))?;
        Ok(BackupReply {
            path: path.display().to_string(),
            node: manifest.node,
            taken_at_micros,
            bytes: dir_bytes(path),
        })
    }
}

/// One `Normal` path component: no separators, `.`, `..`, root or prefix.
fn is_plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) && !name.contains('/')
        && !name.starts_with('.')
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Bytes of the regular files under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Microseconds since the Unix epoch (0 before it).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_backup_names() {
        for good in ["nightly", "2026-12-03T09", "a.b"] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "a/"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}

/// The file `shoal restore` leaves in a data directory it filled from a backup. The node
/// checks it at start (a backup restores only into the node it was taken of), runs in
/// restore mode while it is there (see `shoal_proto`'s `engine/restore.rs`), and removes
/// it once every partition matches a peer's copy: a node stopped before then restores
/// again at its next start.
pub const RESTORED_MARKER: &str = "SHOAL_RESTORED.json";

/// What [`RESTORED_MARKER`] says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoredMarker {
    /// The backup directory restored.
    pub from: PathBuf,
    /// The backup's manifest.
    pub manifest: Manifest,
    /// When the restore ran, microseconds since the Unix epoch.
    pub restored_at_micros: u64,
}

/// Refuses to start node `id` on a data directory restored from another node's backup;
/// returns the marker if the directory was restored.
pub(crate) fn check_restored(
    data_dir: &Path,
    id: &NodeId,
) -> anyhow::Result<Option<RestoredMarker>> {
    let path = data_dir.join(RESTORED_MARKER);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let marker: RestoredMarker = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a restore marker: {e}", path.display()))?;
    if marker.manifest.node != *id {
        anyhow::bail!(
            "{} was restored from a backup of node {}, but this node is {id}",
            data_dir.display(),
            marker.manifest.node
        );
    }
    Ok(Some(marker))
}
