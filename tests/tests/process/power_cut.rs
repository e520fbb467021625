//! A power cut on one node must not drop acknowledged writes (issue 10, item 1).
//!
//! A power cut under `buffered` durability loses the end of a node's WAL. It is imitated
//! here by putting back a copy of the node's data directory taken earlier while the node
//! was stopped: to the node, the same store with its newest writes gone. The node was
//! restarted cleanly in between, so the copy looks like a clean stop: only an actor per
//! open (not "a new actor after an unclean shutdown") tells the runs apart.
//!
//! Anti-entropy is off: with it on, the restored node could be repaired from its peers
//! before the second puts, and would then not coordinate them without the first values,
//! which is the case under test.

use std::path::Path;
use std::time::Duration;

use shoal_client::ReadOptions;
use shoal_proto::wire::{
    decode_response, encode_request, ClientRequest, ClientResponse, Request, Response, WriteOptions,
};

use crate::harness::{assert_none_failed, key_values, put_all, run_bounded, values_of, Cluster};

/// Keys written: with N = 3 on three nodes, the restored node is a primary of each.
const KEYS: usize = 200;
/// Requests in flight at once.
const IN_FLIGHT: usize = 16;

/// Copies the directory `from` (files and subdirectories) to `to`, which must not exist.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy");
    for entry in std::fs::read_dir(from).expect("reading the data directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying a file");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_to_an_older_copy_of_its_store_drops_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, "[aae]\nenabled = false\n").await;
    let restored = 0;
    let data = cluster.data_dir(restored);
    let copy = cluster.dir().join("n1-data-copy");
    cluster.terminate(restored);
    copy_dir(&data, &copy);
    cluster.restart(restored).await;

    let client = cluster.client().await;
    let first = key_values("pcut", 0..KEYS);
    put_all(&client, &first, 3, IN_FLIGHT).await;

    // The power cut: every write since the copy is gone from the node's disk.
    cluster.kill(restored);
    std::fs::remove_dir_all(&data).expect("removing the data directory");
    copy_dir(&copy, &data);
    cluster.restart(restored).await;

    // Blind puts of a second value, each coordinated by the restored node (a primary of
    // every key), which no longer holds the first values.
    let endpoint = cluster.raw_client(shoal_transport::TransportConfig::default());
    let addr = cluster.nodes()[restored].addr;
    let items: Vec<(String, String)> = first
        .iter()
        .map(|(k, _)| (k.clone(), format!("{k}-second")))
        .collect();
    let errors = run_bounded(items, IN_FLIGHT, |(key, value)| {
        let endpoint = endpoint.clone();
        async move {
            let request = Request::Client(ClientRequest::Put {
                key: key.clone().into_bytes(),
                value: value.into_bytes(),
                context: None,
                options: WriteOptions::default(),
            });
            let bytes = endpoint
                .request(
                    addr,
                    None,
                    encode_request(&request),
                    Duration::from_secs(15),
                )
                .await
                .map_err(|e| format!("put {key}: {e}"))?;
            match decode_response(&bytes).map(Response::unstamped) {
                Ok(Response::Client(ClientResponse::Put(_))) => Ok(()),
                other => Err(format!("put {key}: {other:?}")),
            }
        }
    })
    .await;
    assert_none_failed(&errors, KEYS, "second puts at the restored node failed");

    let items = first.clone();
    let errors = run_bounded(items, IN_FLIGHT, |(key, value)| {
        let client = client.clone();
        async move {
            let read = client
                .get_with(&key)
                .options(ReadOptions::default().r(3))
                .send()
                .await
                .map_err(|e| format!("get {key}: {e}"))?;
            let values = values_of(&read);
            let mut want = vec![value, format!("{key}-second")];
            want.sort();
            if values == want {
                Ok(())
            } else {
                Err(format!("{key}: read {values:?}, expected {want:?}"))
            }
        }
    })
    .await;
    assert_none_failed(
        &errors,
        KEYS,
        "keys lost their acknowledged first value (or hold other values)",
    );
    endpoint.close().await;
    client.close().await;
}
