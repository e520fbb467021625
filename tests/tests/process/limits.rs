//! The size limits of the SDK, the transport and the engine agree: whatever object a node
//! stores, the SDK can receive (issue 10, item 4). A node with the default limits, values
//! of up to 4 MiB and objects of up to 16 MiB.

use shoal_client::{ClientError, ReadOptions, WriteOptions, MAX_FRAME_BYTES, MAX_OBJECT_BYTES};
use shoal_node::{NodeConfig, DEFAULT_CONFIG_TOML};

use crate::harness::Cluster;

const MIB: usize = 1 << 20;

/// The default node config file with its `max_object_bytes` set to `bytes`.
fn with_object_limit(bytes: usize) -> String {
    DEFAULT_CONFIG_TOML.replacen(
        "max_object_bytes = 16777216",
        &format!("max_object_bytes = {bytes}"),
        1,
    )
}

#[test]
fn every_frame_a_node_may_send_fits_what_the_sdk_receives() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "node.pem", "node.key"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let path = dir.path().join("node.toml");
    let parse = |bytes: usize| NodeConfig::parse(&with_object_limit(bytes), &path, dir.path());
    assert_ne!(
        with_object_limit(MIB),
        DEFAULT_CONFIG_TOML,
        "the default file sets max_object_bytes"
    );
    // The default, and the largest object limit a node accepts: its frames fit the SDK's.
    for bytes in [16 * MIB, MAX_OBJECT_BYTES] {
        let cfg = parse(bytes).unwrap_or_else(|e| panic!("{bytes}: {e}"));
        assert_eq!(cfg.limits.max_object_bytes, bytes);
        let frame = cfg.transport_config().max_frame_bytes;
        assert!(frame <= MAX_FRAME_BYTES, "{frame} > {MAX_FRAME_BYTES}");
        // A value, the largest object and a get's answer all fit a frame.
        assert!(cfg.limits.max_value_bytes < cfg.limits.max_object_bytes);
        assert!(cfg.limits.max_object_bytes < frame);
    }
    // An object limit past what the SDK receives is refused at start, by name.
    match parse(MAX_OBJECT_BYTES + 1) {
        Err(e) => assert!(e.to_string().contains("limits.max_object_bytes"), "{e}"),
        Ok(_) => panic!("a node accepted objects larger than the SDK can receive"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_whose_sum_is_larger_than_eight_mib_stay_readable() {
    let node = Cluster::start(1, "").await;
    let client = node.client().await;
    let (r, w) = (ReadOptions::default(), WriteOptions::default());
    // Three concurrent 3 MiB values: a 9 MiB object, within the node's 16 MiB limit.
    for fill in [b'a', b'b', b'c'] {
        client
            .put_with("big", vec![fill; 3 * MIB])
            .options(w)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put of {}: {e}", char::from(fill)));
    }
    let read = client
        .get_with("big")
        .options(r)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the stored object is unreadable: {e}"));
    assert_eq!(read.values.len(), 3);
    assert!(read.values.iter().all(|v| v.len() == 3 * MIB));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_object_a_node_stores_is_readable_through_the_sdk() {
    let node = Cluster::start(1, "").await;
    let client = node.client().await;
    let (r, w) = (ReadOptions::default(), WriteOptions::default());
    // Concurrent values until the node refuses one for the object limit, then one sized
    // to what was left: the object ends within a few bytes of `max_object_bytes`.
    let mut size = 4 * MIB;
    let mut fill = b'a';
    let mut exact = false;
    for _ in 0..16 {
        match client
            .put_with("full", vec![fill; size])
            .options(w)
            .send()
            .await
        {
            Ok(_) => {
                fill += 1;
                if exact {
                    break;
                }
            }
            Err(ClientError::ObjectTooLarge { len, max }) => {
                assert!(len > max);
                let over = len - max;
                assert!(
                    over < size,
                    "a value of {size} bytes cannot shrink by {over}"
                );
                size -= over;
                exact = true;
            }
            Err(e) => panic!("put of {size} bytes: {e}"),
        }
    }
    assert!(exact, "the node never refused a value for the object limit");
    let read = client
        .get_with("full")
        .options(r)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the largest stored object is unreadable: {e}"));
    let total: usize = read.values.iter().map(Vec::len).sum();
    assert!(total > 16 * MIB - 4096, "{total} bytes of values");
    client.close().await;
}
