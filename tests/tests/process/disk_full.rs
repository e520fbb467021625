//! A node whose disk fills up: its data directory on a 64 MiB tmpfs (mounting one needs
//! root, which CI and the dev machines have). The node refuses writes with the typed
//! `DiskFull` (no RocksDB text, no server path), keeps serving reads, shows the state in
//! `status` and its metrics, and accepts writes again by itself, without a restart, once
//! space is freed.

use std::time::Duration;

use shoal_client::{Client, ClientError, ReadOptions, WriteOptions};

use crate::harness::{scrape, wait_until, Cluster};

use self::tmpfs::Tmpfs;

/// The storage tests' tmpfs guard, shared by path (the storage crate's tests are not a
/// library this package can depend on).
#[path = "../../../storage/tests/support/tmpfs.rs"]
mod tmpfs;

/// Size of the node's filesystem.
const TMPFS_SIZE: &str = "64m";
/// Size of each value written to fill the disk (the node's value limit).
const VALUE_BYTES: usize = 64 * 1024;
/// Bound on the puts before the disk must be full: the whole filesystem, twice over.
const MAX_FILL_PUTS: usize = 2 * 64 * 1024 * 1024 / VALUE_BYTES;
/// Free space the ballast leaves, so that filling the rest is quick.
const LEFT_FREE_BYTES: u64 = 6 << 20;
/// How long the node may take to accept writes again once space is freed.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the status and metrics may take to show a state (one disk check is 1 s).
const STATE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a CLI command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn key(i: usize) -> String {
    format!("fill-{i:05}")
}

/// Puts values until one fails; returns how many were acknowledged and the error.
async fn fill(client: &Client) -> (usize, ClientError) {
    let value = vec![0x5Au8; VALUE_BYTES];
    for i in 0..MAX_FILL_PUTS {
        if let Err(error) = client
            .put_with(key(i), value.clone())
            .context(None)
            .options(WriteOptions::default())
            .send()
            .await
        {
            return (i, error);
        }
    }
    panic!("{MAX_FILL_PUTS} values of {VALUE_BYTES} bytes fit on a {TMPFS_SIZE} filesystem");
}

/// Waits (at most [`RECOVERY_DEADLINE`]) until a put succeeds, each try a new key.
async fn wait_for_a_put(client: &Client) {
    let mut attempt = 0usize;
    wait_until(
        "a put to succeed after space was freed",
        RECOVERY_DEADLINE,
        || {
            attempt += 1;
            let client = client.clone();
            async move {
                client
                    .put_with(format!("after-{attempt}"), "space is back")
                    .context(None)
                    .options(WriteOptions::default())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
}

/// The value of the unlabelled gauge or counter `name` on the node.
async fn metric(node: &Cluster, name: &str) -> Result<f64, String> {
    let exposition = scrape(node.nodes()[0].metrics).await?;
    exposition.check_family(name, exposition_kind(name))?;
    Ok(exposition.sum(name, &[]))
}

fn exposition_kind(name: &str) -> crate::harness::MetricKind {
    if name.ends_with("_total") {
        crate::harness::MetricKind::Counter
    } else {
        crate::harness::MetricKind::Gauge
    }
}

/// Waits until the node's status and gauge both say the disk is (or is not) full.
async fn wait_disk_state(node: &Cluster, client: &Client, full: bool) {
    wait_until(
        &format!("status and metrics showing disk_full = {full}"),
        STATE_DEADLINE,
        || async {
            let report = client.status(None).await.map_err(|e| e.to_string())?;
            let gauge = metric(node, "shoal_storage_disk_full").await?;
            if report.storage.disk_full == full && gauge == f64::from(u8::from(full)) {
                Ok(())
            } else {
                Err(format!("status {:?}, gauge {gauge}", report.storage))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_disk_full_keeps_reads_and_recovers_without_restart() {
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data = fs.path().join("data");
    // No reserve: RocksDB itself meets ENOSPC, the hard case (the reserve is checked at
    // the storage level). Small memtables, so that flushes meet the full disk too.
    let config = format!(
        "data_dir = \"{}\"\n[storage]\nblock_cache_bytes = 1048576\nwrite_buffer_bytes = 1048576\n\
         min_free_bytes = 0\n[limits]\nmax_value_bytes = {VALUE_BYTES}\n",
        data.display()
    );
    let mut node = Cluster::start(1, &config).await;
    let client = node.client().await;
    let pid = node.nodes()[0].pid();
    client
        .put_with("before", "the disk filled")
        .context(None)
        .options(WriteOptions::default())
        .send()
        .await
        .expect("a put before the disk fills");
    let ballast = fs.ballast(LEFT_FREE_BYTES);

    // Full: a typed error, with neither RocksDB's text nor the server's paths.
    let (acknowledged, error) = fill(&client).await;
    assert!(
        acknowledged > 0,
        "the disk was full before any put: {error}"
    );
    assert!(
        matches!(error, ClientError::DiskFull),
        "expected DiskFull, got {error:?}"
    );
    let text = error.to_string();
    for leak in ["rocksdb", "IO error", ".log", &*fs.path().to_string_lossy()] {
        assert!(!text.contains(leak), "the client sees {leak:?}: {text}");
    }
    let cli_put = node
        .cli(&["put", "cli-key", "v"], None, COMMAND_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!cli_put.status.success(), "{cli_put:#?}");
    assert!(cli_put.stderr.contains("disk full"), "{cli_put:#?}");
    assert!(!cli_put.stderr.contains("rocksdb"), "{cli_put:#?}");

    // Reads are served, the state is shown.
    let read = client
        .get_with("before")
        .options(ReadOptions::default())
        .send()
        .await
        .expect("a read on a full disk");
    assert_eq!(read.values, vec![b"the disk filled".to_vec()]);
    let read = client
        .get_with(key(0))
        .options(ReadOptions::default())
        .send()
        .await
        .expect("a read on a full disk");
    assert!(read.found);
    wait_disk_state(&node, &client, true).await;
    assert!(
        metric(&node, "shoal_storage_disk_full_refusals_total")
            .await
            .unwrap()
            >= 2.0
    );
    let status = node
        .cli(&["status"], None, COMMAND_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .ok();
    assert!(
        status.stdout.contains("DISK FULL: n1 refuses writes"),
        "{status:#?}"
    );

    // Space returns: writes are accepted again, by the same process.
    std::fs::remove_file(&ballast).expect("deleting the ballast");
    wait_for_a_put(&client).await;
    assert!(node.is_running(0), "the node exited");
    assert_eq!(node.nodes()[0].pid(), pid, "the node was restarted");
    wait_disk_state(&node, &client, false).await;
    let free = metric(&node, "shoal_storage_free_bytes").await.unwrap();
    assert!(free > LEFT_FREE_BYTES as f64, "free bytes gauge {free}");

    // Nothing acknowledged was lost.
    for i in 0..acknowledged {
        let read = client
            .get_with(key(i))
            .options(ReadOptions::default())
            .send()
            .await
            .expect("a read");
        assert!(read.found, "acknowledged put {i} of {acknowledged} is lost");
    }
}

/// A node whose filesystem something else filled to the last byte while it was down:
/// it starts (deleting its spare file to make room for opening its store), serves
/// reads, refuses writes with `DiskFull` and shows it, and once space is freed makes its
/// spare file again and takes writes, without another restart. Without the spare file
/// it could not open its store and exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_a_full_disk_starts_serves_reads_and_takes_writes_once_space_is_back() {
    const SPARE: u64 = 8 << 20;
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data = fs.path().join("data");
    let config = format!(
        "data_dir = \"{}\"\n[storage]\nblock_cache_bytes = 1048576\nwrite_buffer_bytes = 1048576\n\
         min_free_bytes = 4194304\nspare_space_bytes = {SPARE}\n",
        data.display()
    );
    let mut node = Cluster::start(1, &config).await;
    let client = node.client().await;
    client
        .put_with("before", "the restart")
        .context(None)
        .options(WriteOptions::default())
        .send()
        .await
        .expect("a put before the disk fills");
    let spare = metric(&node, "shoal_storage_spare_space_bytes")
        .await
        .unwrap();
    assert_eq!(spare, SPARE as f64, "the spare file gauge");
    assert!(data.join(shoal_storage::SPARE_SPACE_FILE).exists());
    drop(client);

    node.terminate(0);
    let filler = fs.fill_up("filler");
    node.restart(0).await;
    assert!(
        !data.join(shoal_storage::SPARE_SPACE_FILE).exists(),
        "the spare file was not given back"
    );
    let client = node.client().await;
    let read = client
        .get_with("before")
        .options(ReadOptions::default())
        .send()
        .await
        .expect("a read after starting on a full disk");
    assert_eq!(read.values, vec![b"the restart".to_vec()]);
    let error = client
        .put_with("during", "full")
        .context(None)
        .options(WriteOptions::default())
        .send()
        .await
        .expect_err("a put on a full disk");
    assert!(
        matches!(error, ClientError::DiskFull),
        "expected DiskFull, got {error:?}"
    );
    wait_disk_state(&node, &client, true).await;
    assert_eq!(
        metric(&node, "shoal_storage_spare_space_bytes")
            .await
            .unwrap(),
        0.0
    );

    // Space returns: the spare file is made again and writes are accepted.
    let pid = node.nodes()[0].pid();
    std::fs::remove_file(&filler).expect("deleting the filler");
    wait_for_a_put(&client).await;
    wait_disk_state(&node, &client, false).await;
    // The node's once-a-second disk check makes the file again.
    wait_until(
        "the spare file to be made again",
        STATE_DEADLINE,
        || async {
            match metric(&node, "shoal_storage_spare_space_bytes").await? {
                bytes if bytes == SPARE as f64 => Ok(()),
                bytes => Err(format!("spare file gauge {bytes}")),
            }
        },
    )
    .await;
    assert!(data.join(shoal_storage::SPARE_SPACE_FILE).exists());
    assert_eq!(node.nodes()[0].pid(), pid, "the node was restarted");
}
