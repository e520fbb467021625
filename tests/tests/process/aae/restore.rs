//! `shoal backup` and `shoal restore` end to end, on a 3-node cluster with a short
//! tombstone grace period: a backup taken before deletes that were then reaped on every
//! replica (so older than the grace period) restores; the node starts from it in restore
//! mode (not ready, serving nothing) until each of its partitions matches a peer's copy,
//! and then every key reads (R = N) as the cluster acknowledged it: no deleted value back
//! (a key written again after the reap has only its new value), no acknowledged write
//! lost.

use std::path::Path;
use std::time::Duration;

use crate::harness::{http_get, key_values, scrape, shoal, wait_until, Cluster, Run};

use super::support::{assert_reads, delete_all, found, not_found, put_new, N};
use super::{reap_settings_with_grace, wait_reaped, SERIAL};

/// Tombstones reapable 15 s after their delete: short enough to wait for a reap, so that
/// the backup restored is older than the grace period and its deleted values are gone
/// from every other replica.
const GRACE: &str = "15s";
/// The grace, then up to a reap interval and a scan of every partition; generous for a
/// loaded machine.
const REAP_TIMEOUT: Duration = Duration::from_secs(150);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// A restore is one exchange per partition with a peer: seconds, here.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

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
async fn an_old_backup_restores_after_a_reap_without_bringing_back_a_deleted_value() {
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

    // Deleted, then reaped on every replica; one key written again after the reap; more
    // keys written after the backup.
    delete_all(&client, dead_contexts.into_iter().collect(), 3).await;
    wait_reaped(&cluster, &ring, &live, DEAD, REAP_TIMEOUT).await;
    let reborn = vec![(dead[0].0.clone(), format!("{}-reborn", dead[0].0))];
    put_new(&client, &reborn, 3).await;
    let after = key_values("after", 0..20);
    put_new(&client, &after, 2).await;

    // The old backup holds the reaped values; it restores all the same (into a stopped
    // node's non-empty data directory only with --force).
    cluster.terminate(0);
    let data_dir = cluster.data_dir(0);
    let not_empty = restore(&old, &data_dir, false).await;
    assert_eq!(not_empty.code(), Some(1), "{not_empty:#?}");
    assert!(not_empty.stderr.contains("not empty"), "{not_empty:#?}");
    assert!(!data_dir.join("SHOAL_RESTORED.json").exists());
    let restored = restore(&old, &data_dir, true).await.ok().json();
    assert_eq!(restored["node"], "n1");
    let marker = data_dir.join("SHOAL_RESTORED.json");
    assert!(marker.is_file());
    cluster.restart(0).await;

    // Restore mode ends once every partition matches a peer: the node removes the
    // marker and reports ready.
    wait_until("n1 to finish its restore", RESTORE_TIMEOUT, || {
        let marker = marker.clone();
        async move {
            if marker.exists() {
                Err(format!("{} still there", marker.display()))
            } else {
                Ok(())
            }
        }
    })
    .await;
    let metrics = cluster.nodes()[0].metrics;
    wait_until("n1 ready", RESTORE_TIMEOUT, || async move {
        match http_get(metrics, "/ready").await? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/ready: {status} {body}")),
        }
    })
    .await;
    let exposition = scrape(metrics).await.expect("/metrics");
    let left: Vec<f64> = exposition
        .samples
        .iter()
        .filter(|s| s.name == "shoal_restore_partitions_left")
        .map(|s| s.value)
        .collect();
    assert_eq!(
        left,
        vec![0.0],
        "a restored node reports its partitions left"
    );

    let mut expected = found(&live);
    expected.extend(not_found(&dead[1..]));
    expected.extend(found(&after));
    expected.extend(reborn.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
    assert_reads(&client, &expected, N as u8).await;
    client.close().await;
}
