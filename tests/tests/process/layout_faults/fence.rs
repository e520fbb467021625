//! A replaced node comes back with its old data and its old layout (its data directory
//! kept, started again after `replace OLD NEW` was committed): it is fenced. It never gets
//! a write acknowledged, not even at W = 1 — a client sending it one gets `Unavailable`
//! until a peer confirmed its layout, then a clear error naming the fence —,
//! its peers refuse its node-to-node messages, and the new owners' data stays as the
//! cluster wrote it after the replacement (overwrites and deletes are not undone).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shoal_proto::wire::{ClientRequest, ClientResponse, WriteOptions};
use shoal_proto::RequestError;

use super::stop_all;
use crate::harness::{
    assert_all_readable, assert_owners_store, check_read, key_values, put_all, run_bounded,
    wait_until, Cluster, LayoutProbe, CHANGE_TIMEOUT,
};

/// The node replaced: `n3`.
const OLD: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_node_back_with_its_old_data_is_fenced_and_changes_nothing() {
    let mut cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    let probe = LayoutProbe::new(&cluster);
    // W = 3: the node to be replaced holds every key.
    let kvs = key_values("fence", 0..150);
    put_all(&client, &kvs, 3, 32).await;

    // n3 dies (its disk kept); n4 replaces it.
    let new = cluster.add_candidate();
    probe.wait_candidate(&cluster, 0, &cluster.id(new)).await;
    cluster.kill(OLD);
    let old_id = cluster.id(OLD);
    wait_until("n1 to see n3 down", CHANGE_TIMEOUT, || async {
        let s = probe.status(&cluster, 0).await?;
        match s.members.iter().find(|m| m.id == old_id) {
            Some(m) if !m.up => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    client
        .stage_replace(&old_id, &cluster.id(new))
        .await
        .expect("staging the replacement");
    assert_eq!(client.commit(1).await.expect("the commit"), 2);
    probe.wait_settled(&cluster, &[0, 1, new], 2).await;

    // After the replacement: a third of the keys overwritten, a third deleted.
    let mut want: Vec<(String, String)> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    for (i, (k, v)) in kvs.iter().enumerate() {
        let read = client.get(k).await.expect("get");
        match i % 3 {
            0 => {
                let v2 = format!("{v}-after");
                client
                    .put_with(k, v2.clone())
                    .context(&read.context)
                    .w(2)
                    .send()
                    .await
                    .expect("overwrite");
                want.push((k.clone(), v2));
            }
            1 => {
                client
                    .delete_with(k)
                    .context(&read.context)
                    .w(2)
                    .send()
                    .await
                    .expect("delete");
                deleted.push(k.clone());
            }
            _ => want.push((k.clone(), v.clone())),
        }
    }

    // n3 comes back from its own disk, still at version 1 and holding every old value.
    cluster.start_again(OLD);
    // Writes sent to it directly are never acknowledged, at W = 1 too (its own copy would
    // meet W for version 1): until a peer confirmed its layout it refuses them as
    // unavailable, and once it has fetched version 2 it says it is fenced.
    let attempts = AtomicU32::new(0);
    let confirming = AtomicU32::new(0);
    let (p, c, a, confirming) = (&probe, &cluster, &attempts, &confirming);
    let fenced = wait_until("n3 to refuse writes as fenced", CHANGE_TIMEOUT, move || {
        let n = a.fetch_add(1, Ordering::Relaxed) + 1;
        let key = format!("fence-{:05}", n % 150);
        async move {
            let req = ClientRequest::Put {
                key: key.clone().into_bytes(),
                value: b"from-the-fenced-node".to_vec(),
                context: None,
                // W = 1: the node's own copy would be enough under version 1.
                options: WriteOptions {
                    w: Some(1),
                    ..WriteOptions::default()
                },
            };
            match p.client(c, OLD, req, Duration::from_secs(5)).await {
                Ok(ClientResponse::Error(RequestError::NotAllowed(why)))
                    if why.contains("fenced") =>
                {
                    Ok(why)
                }
                Ok(ClientResponse::Error(e @ RequestError::Unavailable { alive: 0, .. })) => {
                    confirming.fetch_add(1, Ordering::Relaxed);
                    Err(format!("put {key} refused while confirming: {e}"))
                }
                Ok(ClientResponse::Error(e)) => Err(format!("put {key} refused: {e}")),
                Ok(other) => panic!("the replaced node acknowledged a write of {key}: {other:?}"),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    eprintln!(
        "after {} attempts ({} refused while it confirmed its layout) the replaced node \
         answers: {fenced}",
        attempts.load(Ordering::Relaxed),
        confirming.load(Ordering::Relaxed)
    );
    let refused = cluster
        .metric_sum(&[0, 1, new], "shoal_peer_refused_total", &[])
        .await
        .expect("metrics")
        + cluster
            .metric_sum(
                &[0, 1, new],
                "shoal_refused_requests_total",
                &[("reason", "unknown_node")],
            )
            .await
            .expect("metrics");
    assert!(refused > 0.0, "no peer refused the replaced node");

    // Its old values came back nowhere: R = 3 reads see the writes made after it left.
    assert_all_readable(&client, &want, 3, 16).await;
    let errors = run_bounded(deleted.clone(), 16, |k| {
        let client = client.clone();
        async move {
            let read = client
                .get_with(&k)
                .r(3)
                .send()
                .await
                .map_err(|e| format!("{k}: {e}"))?;
            check_read(&k, &read, None)
        }
    })
    .await;
    assert!(errors.is_empty(), "deleted keys came back: {errors:?}");
    client.close().await;
    stop_all(&mut cluster);
    assert_owners_store(&cluster, 3, &want);
}
