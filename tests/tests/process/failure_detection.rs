//! The failure detector on real processes: a node stopped with SIGSTOP (alive to the
//! kernel, its connections open, answering nothing) is reported down by the others'
//! `shoal status` within a few seconds while writes at W = 2 keep succeeding (at least 99%
//! of them), no live node
//! is ever marked down, and after SIGCONT it is up again.

use std::time::Duration;

use shoal_client::{MemberState, WriteOptions};
use shoal_proto::metrics::MEMBER_STATE_CHANGES_TOTAL;
use tokio::time::Instant;

use crate::harness::{wait_until, Cluster};

/// The bound on detecting a stopped node with the default settings (probes every
/// 500 ms, 1 s probe timeout, 3 failures after 2 s of silence: about 2.5 s), plus the
/// status poll's own interval and a slow status answer.
const DETECTION_BOUND: Duration = Duration::from_secs(5);
/// Slack for polling: one status round trip on a loaded CI machine.
const POLL_SLACK: Duration = Duration::from_secs(2);
/// Deadline for the resumed node to be seen up.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The writes' timeout (the nodes' default request timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes attempted while the node is stopped, at most.
const MAX_WRITES: usize = 2_000;

/// Whether the live nodes' `shoal status --json` all report `member` in `state`.
async fn status_says(
    cluster: &Cluster,
    reporters: &[usize],
    member: usize,
    state: &str,
) -> Result<(), String> {
    let member = cluster.id(member).to_string();
    for &r in reporters {
        let reporter = cluster.id(r).to_string();
        let run = cluster
            .cli(
                &["status", "--json", "--node", &reporter],
                None,
                Duration::from_secs(5),
            )
            .await?;
        if run.code() != Some(0) {
            return Err(format!("status of {reporter}: {run:?}"));
        }
        let report = run.json();
        let seen = report["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == member.as_str()))
            .map(|m| m["state"].clone());
        if seen.as_ref().and_then(|s| s.as_str()) != Some(state) {
            return Err(format!("{reporter} sees {member} as {seen:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_reported_down_within_seconds_while_writes_go_on_and_up_after_sigcont() {
    let cluster = Cluster::start(3, "").await;
    let victim = 2;
    let live = [0, 1];
    let victim_only = [victim];
    // Everyone up (and heard from) before the stop.
    let status = cluster.status_client().await;
    wait_until("every node to see every node up", STATE_TIMEOUT, || {
        cluster.views_agree(&status, &[0, 1, 2], &[0, 1, 2], MemberState::Up)
    })
    .await;
    let downs_before = cluster
        .metric_sum(&live, MEMBER_STATE_CHANGES_TOTAL, &[("state", "down")])
        .await
        .expect("metrics of the live nodes");

    cluster.pause(victim);
    let stopped = Instant::now();
    // A client made after the stop: its dial of the stopped node fails (not delivered)
    // and it routes around it, where a cached connection would wait out each request.
    let client = cluster.client().await;
    // Writes at W = 2 go on (the two live nodes are enough), one at a time, until both
    // live nodes report the stopped one down.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let (mut acked, mut failed) = (0usize, Vec::new());
            for i in 0..MAX_WRITES {
                let opts = WriteOptions::default().w(2).timeout(REQUEST_TIMEOUT);
                let key = format!("stopped-{i:05}");
                match client
                    .put_with(&key, format!("v{i}"))
                    .context(None)
                    .options(opts)
                    .send()
                    .await
                {
                    Ok(_) => acked += 1,
                    Err(e) => failed.push(format!("put {key}: {e}")),
                }
                if stopped.elapsed() > DETECTION_BOUND + POLL_SLACK {
                    break;
                }
            }
            (acked, failed)
        })
    };
    wait_until(
        "both live nodes to report the stopped node down",
        DETECTION_BOUND + POLL_SLACK,
        || cluster.views_agree(&status, &live, &victim_only, MemberState::Down),
    )
    .await;
    let detected = stopped.elapsed();
    status_says(&cluster, &live, victim, "down")
        .await
        .unwrap_or_else(|e| panic!("`shoal status`: {e}"));
    let (acked, failed) = writer.await.expect("the writer task");
    eprintln!(
        "stopped node reported down after {detected:?}; {acked} writes acknowledged \
         meanwhile, {} failed: {:?}",
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    // At most one write in a hundred may fail (the hostile suite's standard): in one
    // run of about thirty a single write failed, its error not captured.
    assert!(
        acked > 0 && failed.len() * 100 <= acked + failed.len(),
        "writes at W = 2 went on while the node was stopped: {acked} acknowledged, {} \
         failed: {failed:?}",
        failed.len()
    );
    // Each live node marked only the stopped node down, once: nobody flapped.
    let downs = cluster
        .metric_sum(&live, MEMBER_STATE_CHANGES_TOTAL, &[("state", "down")])
        .await
        .expect("metrics of the live nodes");
    assert_eq!(
        downs - downs_before,
        2.0,
        "down transitions seen by the two live nodes"
    );

    cluster.resume(victim);
    wait_until(
        "the live nodes to see the resumed node up",
        STATE_TIMEOUT,
        || status_says(&cluster, &live, victim, "up"),
    )
    .await;
    client.close().await;
    status.close().await;
}
