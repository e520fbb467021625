//! Any node takes any request: a node that is not a replica of a key forwards it to one
//! that is, over real QUIC between real node processes, and relays the answer.

use shoal_proto::wire::{ClientRequest, ClientResponse, ReadOptions, WriteOptions};
use shoal_transport::TransportConfig;

use crate::harness::{ask, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_replica_forwards_and_relays_the_answer() {
    // 5 nodes with N = 3: every key has two nodes that are not its replicas.
    let cluster = Cluster::start(5, "").await;
    let client = cluster.client().await;
    let info = client.cluster_info().await;
    let endpoint = cluster.raw_client(TransportConfig::default());
    let mut forwarded = 0;
    for i in 0..20 {
        let key = format!("forward-{i}").into_bytes();
        let replicas = info.ring.preference_list_for_key(&key, 3).nodes;
        let outsider = info
            .members
            .iter()
            .find(|m| !replicas.contains(&m.id))
            .expect("5 nodes, 3 replicas: some node is not a replica");
        let put = ask(
            &endpoint,
            outsider.addr,
            ClientRequest::Put {
                key: key.clone(),
                value: format!("value-{i}").into_bytes(),
                context: None,
                options: WriteOptions::default(),
            },
        )
        .await;
        assert!(
            matches!(put, ClientResponse::Put(_)),
            "put via non-replica {}: {put:?}",
            outsider.id
        );
        let get = ask(
            &endpoint,
            outsider.addr,
            ClientRequest::Get {
                key: key.clone(),
                options: ReadOptions::default(),
            },
        )
        .await;
        match get {
            ClientResponse::Get(reply) => {
                assert!(reply.found);
                assert_eq!(reply.values, vec![format!("value-{i}").into_bytes()]);
            }
            other => panic!("get via non-replica {}: {other:?}", outsider.id),
        }
        forwarded += 1;
    }
    assert_eq!(forwarded, 20);
    // The SDK, routing by ring, sees the same data.
    let read = client
        .get_with("forward-7")
        .options(shoal_client::ReadOptions::default())
        .send()
        .await
        .expect("SDK get");
    assert_eq!(read.values, vec![b"value-7".to_vec()]);
    endpoint.close().await;
    client.close().await;
}
