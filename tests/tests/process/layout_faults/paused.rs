//! A coordinator paused with writes in flight while its partitions move: n2 coordinates
//! a stream of writes sent to it directly when it is stopped (SIGSTOP), the join of n4
//! is committed without it, and client writes go on through the others. While n2 is
//! stopped the old owners cannot pass the barrier (every member must acknowledge the
//! layout in which they no longer own a partition, n2 included), so nothing is dropped
//! under its feet; when it runs again it finishes its writes with its old layout, is
//! refused as stale by its peers, learns version 2, and the change completes. At the
//! end every owner of version 2 holds every acknowledged write, those n2 acknowledged
//! included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::wire::{ClientRequest, ClientResponse, WriteOptions};
use shoal_transport::TransportConfig;

use super::{more_acked, stage_candidate_join, stop_all, wait_repaired};
use crate::harness::{
    assert_owners_store, key_values, put_all, try_ask, wait_until, Cluster, LayoutProbe, Load,
    CHANGE_TIMEOUT,
};

/// The paused coordinator: `n2`.
const PAUSED: usize = 1;
/// Writers sending to it at once.
const PARALLEL: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_paused_with_writes_in_flight_while_its_partitions_move_loses_none() {
    let mut cluster = Cluster::start(3, "").await;
    let client = cluster.client().await;
    let probe = LayoutProbe::new(&cluster);
    let before = key_values("paused", 0..300);
    put_all(&client, &before, 2, 32).await;
    let joiner = stage_candidate_join(&mut cluster, &probe, &client).await;

    // Writers aimed at n2 alone (a raw endpoint: the SDK would pick the coordinator).
    let endpoint = cluster.raw_client(TransportConfig::default());
    let addr = cluster.nodes()[PAUSED].addr;
    let stop = Arc::new(AtomicBool::new(false));
    let direct_acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..PARALLEL)
        .map(|t| {
            let (endpoint, stop, acked, sent) = (
                endpoint.clone(),
                stop.clone(),
                direct_acked.clone(),
                sent.clone(),
            );
            tokio::spawn(async move {
                for i in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (k, v) = (format!("direct-{t}-{i:05}"), format!("direct-v-{t}-{i:05}"));
                    let req = ClientRequest::Put {
                        key: k.clone().into_bytes(),
                        value: v.clone().into_bytes(),
                        context: None,
                        options: WriteOptions::default(),
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    // A put still in flight when n2 is stopped waits here until it runs
                    // again (or the request times out).
                    if let Ok(ClientResponse::Put(_)) =
                        try_ask(&endpoint, addr, req, Duration::from_secs(30)).await
                    {
                        acked.lock().expect("acked").push((k, v));
                    }
                }
            })
        })
        .collect();
    let load = Load::start(&client, "during", 8, 50_000);
    // n2 is busy with the direct writers (some acknowledged), then stopped mid-stream.
    wait_until(
        "n2 to acknowledge direct writes",
        CHANGE_TIMEOUT,
        || async {
            let n = direct_acked.lock().expect("acked").len();
            if n >= 40 {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        },
    )
    .await;
    cluster.pause(PAUSED);
    let acked_at_pause = direct_acked.lock().expect("acked").len();
    let sent_at_pause = sent.load(Ordering::Relaxed);

    assert_eq!(client.commit(1).await.expect("the commit"), 2);
    more_acked(&load, 60).await;
    // The barrier: n2 has not acknowledged version 2, so n1 and n3 still use version 1
    // (they dropped nothing), however far the joiner got.
    for i in [0, 2] {
        let s = probe.status(&cluster, i).await.expect("status");
        assert_eq!(
            s.versions_in_use,
            [1, 2],
            "node {i} passed the barrier while n2 was stopped"
        );
    }
    cluster.resume(PAUSED);
    eprintln!(
        "n2 stopped with {} direct puts sent and not answered",
        sent_at_pause - acked_at_pause
    );
    more_acked(&load, 40).await;

    probe.wait_settled(&cluster, &[0, 1, 2, joiner], 2).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("the direct writers stop")
            .expect("a direct writer panicked");
    }
    let (during, failed) = load.stop().await;
    let direct = std::mem::take(&mut *direct_acked.lock().expect("acked"));
    eprintln!(
        "{} puts acknowledged through the SDK (failures {failed:?}), {} by n2 directly",
        during.len(),
        direct.len()
    );
    wait_repaired(&mut cluster, &client, 3).await;
    stop_all(&mut cluster);
    let all: Vec<(String, String)> = before.into_iter().chain(during).chain(direct).collect();
    let copies = assert_owners_store(&cluster, 3, &all);
    eprintln!("{copies} owner copies of {} keys checked", all.len());
}
