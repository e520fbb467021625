//! `shoal backup` and `shoal restore` end to end, on a 3-node cluster with a short
//! tombstone grace period: a backup taken before deletes that were then reaped on every
//! replica is refused by `shoal restore` (it would bring the deleted values back); a
//! backup younger than the grace period restores, and after the node restarts from it
//! under a new actor, every key reads (R = N) as the cluster acknowledged it: no deleted
//! value back, no acknowledged write lost.

use std::path::Path;
use std::time::Duration;

use crate::harness::{key_values, shoal, Cluster, Run};

use super::support::{assert_reads, delete_all, found, not_found, put_new, N};
use super::{reap_settings_with_grace, wait_reaped, SERIAL};

/// Tombstones reapable 15 s after their delete: long enough for the test to take a
/// backup, stop the node and restore it well within the grace period, short enough to
/// wait for a reap.
const GRACE: &str = "15s";
/// The grace, then up to a reap interval and a scan of every partition; generous for a
/// loaded machine.
const REAP_TIMEOUT: Duration = Duration::from_secs(150);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

async fn cli(cluster: &Cluster, args: &[&str]) -> Run {
    cluster
        .cli(args, None, CLI_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn restore(backup: &Path, data_dir: &Path, force: bool) -> Run {
    let (from, data) = (backup.to_str().unwrap(), data_dir.to_str().unwrap());
    let mut args = vec!["restore", "--from", from, "--data-dir", data, "--json"];
    if force {
        args.push("--force");
    }
    shoal(&args, None, CLI_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// `shoal backup --node n1 --out NAME --json`; returns the backup's path.
async fn backup(cluster: &Cluster, name: &str) -> std::path::PathBuf {
    let run = cli(
        cluster,
        &["backup", "--node", "n1", "--out", name, "--json"],
    )
    .await
    .ok();
    let json = run.json();
    assert_eq!(json["node"], "n1", "{run:#?}");
    let path = std::path::PathBuf::from(json["path"].as_str().unwrap());
    assert_eq!(
        path,
        cluster
            .data_dir(0)
            .parent()
            .unwrap()
            .join("backups")
            .join(name)
    );
    assert!(path.join("manifest.json").is_file() && path.join("db/CURRENT").is_file());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_backup_is_refused_after_a_reap_and_a_young_one_restores_losing_nothing() {
    const LIVE: usize = 60;
    const DEAD: usize = 60;
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &reap_settings_with_grace(GRACE, "10s")).await;
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let live = key_values("live", 0..LIVE);
    let dead = key_values("dead", 0..DEAD);
    put_new(&client, &live, 3).await;
    let dead_contexts = put_new(&client, &dead, 3).await;

    let old = backup(&cluster, "old").await;
    // Names are plain directory names under the backup directory, never reused.
    for (name, why) in [("old", "already exists"), ("../escape", "not a plain name")] {
        let run = cli(&cluster, &["backup", "--node", "n1", "--out", name]).await;
        assert_eq!(run.code(), Some(1), "{run:#?}");
        assert!(run.stderr.contains(why), "{name}: {run:#?}");
    }
    assert!(!cluster
        .data_dir(0)
        .parent()
        .unwrap()
        .join("escape")
        .exists());

    // Deleted, then reaped on every replica; one key written again after the reap.
    delete_all(&client, dead_contexts.into_iter().collect(), 3).await;
    wait_reaped(&cluster, &ring, &live, DEAD, REAP_TIMEOUT).await;
    let reborn = vec![(dead[0].0.clone(), format!("{}-reborn", dead[0].0))];
    put_new(&client, &reborn, 3).await;

    // The old backup holds the reaped values: refused, and the data directory untouched.
    cluster.terminate(0);
    let data_dir = cluster.data_dir(0);
    let refused = restore(&old, &data_dir, false).await;
    assert_eq!(refused.code(), Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("older") || refused.stderr.contains("old;"),
        "{refused:#?}"
    );
    let refused = restore(&old, &data_dir, true).await;
    assert_eq!(refused.code(), Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("tombstone_grace"), "{refused:#?}");
    assert!(data_dir.join("CURRENT").is_file());
    assert!(!data_dir.join("SHOAL_RESTORED.json").exists());
    cluster.restart(0).await;

    // A young backup holding keys deleted after it, then writes it does not hold.
    let gone_after = key_values("gone", 0..20);
    let contexts = put_new(&client, &gone_after, 3).await;
    let fresh = backup(&cluster, "fresh").await;
    delete_all(&client, contexts.into_iter().collect(), 3).await;
    let after = key_values("after", 0..20);
    put_new(&client, &after, 2).await;

    cluster.terminate(0);
    let not_empty = restore(&fresh, &data_dir, false).await;
    assert_eq!(not_empty.code(), Some(1), "{not_empty:#?}");
    assert!(not_empty.stderr.contains("not empty"), "{not_empty:#?}");
    let restored = restore(&fresh, &data_dir, true).await.ok().json();
    assert_eq!(restored["node"], "n1");
    assert!(data_dir.join("SHOAL_RESTORED.json").is_file());
    cluster.restart(0).await;
    // The node consumed the marker when it opened the store under a new actor.
    assert!(!data_dir.join("SHOAL_RESTORED.json").exists());

    let mut expected = found(&live);
    expected.extend(not_found(&gone_after));
    expected.extend(not_found(&dead[1..]));
    expected.extend(found(&after));
    expected.extend(reborn.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
    assert_reads(&client, &expected, N as u8).await;
    client.close().await;
}
