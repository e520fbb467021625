//! Helpers of the anti-entropy tests: reading `shoal aae status --json` and
//! checking convergence from it, and bounded-concurrency writes, deletes and reads that
//! keep contexts and check what each read answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use shoal_client::{Client, ClientError, Context, NodeId, ReadOptions, RequestError, WriteOptions};
use shoal_ring::Ring;

use crate::harness::{
    assert_none_failed, check_read, pending_hints, run_bounded, wait_until, Cluster,
};

/// Replicas per key (the dev cluster's N for three nodes).
pub const N: usize = 3;
/// Requests in flight at once.
pub const IN_FLIGHT: usize = 32;
/// How long one run of `shoal aae status --json` may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// `shoal aae status --json`
// ---------------------------------------------------------------------------------------

/// The document `shoal aae status --json` prints.
#[derive(Debug, Deserialize)]
pub struct AaeStatusDoc {
    pub partitions: Vec<PartitionDoc>,
    pub unreachable: Vec<String>,
}

/// One partition of [`AaeStatusDoc`].
#[derive(Debug, Deserialize)]
pub struct PartitionDoc {
    pub partition: u32,
    pub equal: bool,
    pub replicas: Vec<ReplicaDoc>,
}

/// One replica of a [`PartitionDoc`].
#[derive(Debug, Deserialize)]
pub struct ReplicaDoc {
    pub node: String,
    pub root: String,
    pub keys: u64,
}

/// Runs `shoal --config DIR/client.toml aae status --json` and parses its output.
pub async fn cli_aae_status(cluster: &Cluster) -> Result<AaeStatusDoc, String> {
    let run = cluster
        .cli(&["aae", "status", "--json"], None, CLI_TIMEOUT)
        .await?;
    if !run.status.success() {
        return Err(format!(
            "`shoal aae status` exited with {}: {}",
            run.status, run.stderr
        ));
    }
    serde_json::from_str(&run.stdout)
        .map_err(|e| format!("parsing `shoal aae status --json` ({e}): {}", run.stdout))
}

/// Checks that `doc` shows every one of `partitions` partitions with exactly `nodes` as
/// its replicas, all with the same root and the same key count, and nobody unreachable.
/// Returns the key count of each partition.
pub fn converged(
    doc: &AaeStatusDoc,
    partitions: u32,
    nodes: &[NodeId],
) -> Result<BTreeMap<u32, u64>, String> {
    if !doc.unreachable.is_empty() {
        return Err(format!("unreachable: {:?}", doc.unreachable));
    }
    if doc.partitions.len() != partitions as usize {
        return Err(format!(
            "{} partitions listed, expected {partitions}",
            doc.partitions.len()
        ));
    }
    let want: BTreeSet<&str> = nodes.iter().map(NodeId::as_str).collect();
    let mut keys = BTreeMap::new();
    let mut differing = Vec::new();
    for p in &doc.partitions {
        let have: BTreeSet<&str> = p.replicas.iter().map(|r| r.node.as_str()).collect();
        if have != want || p.replicas.len() != nodes.len() {
            return Err(format!(
                "partition {}: replicas {have:?}, expected {want:?}",
                p.partition
            ));
        }
        if let Some(differs) = unequal(p) {
            differing.push(differs);
            continue;
        }
        keys.insert(p.partition, p.replicas[0].keys);
    }
    differing_error(&differing).map(|()| keys)
}

/// `None` when partition `p`'s replicas report equal trees, one root and one key count;
/// otherwise each replica as `node=keys/root`.
pub fn unequal(p: &PartitionDoc) -> Option<String> {
    let counts: BTreeSet<u64> = p.replicas.iter().map(|r| r.keys).collect();
    let roots: BTreeSet<&str> = p.replicas.iter().map(|r| r.root.as_str()).collect();
    if p.equal && roots.len() == 1 && counts.len() == 1 {
        return None;
    }
    let replicas: Vec<String> = p
        .replicas
        .iter()
        .map(|r| format!("{}={}/{}", r.node, r.keys, r.root))
        .collect();
    Some(format!("{}: {}", p.partition, replicas.join(" ")))
}

/// `Ok` when no partition differs, or an error counting them and showing the first few.
pub fn differing_error(differing: &[String]) -> Result<(), String> {
    if differing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} partitions differ (node=keys/root), first: {:?}",
            differing.len(),
            &differing[..differing.len().min(3)]
        ))
    }
}

/// Polls `shoal aae status --json` until [`converged`] holds and `check` accepts the key
/// counts per partition; returns them.
pub async fn wait_converged(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    partitions: u32,
    check: impl Fn(&BTreeMap<u32, u64>) -> Result<(), String>,
) -> BTreeMap<u32, u64> {
    let nodes: Vec<NodeId> = (0..cluster.len()).map(|i| cluster.id(i)).collect();
    wait_until(what, timeout, || {
        let (nodes, check) = (&nodes, &check);
        async move {
            let doc = cli_aae_status(cluster).await?;
            let keys = converged(&doc, partitions, nodes)?;
            check(&keys)?;
            Ok(keys)
        }
    })
    .await
}

/// Keys per partition that `keys` put in.
pub fn keys_per_partition<'k>(
    ring: &Ring,
    keys: impl IntoIterator<Item = &'k str>,
) -> BTreeMap<u32, u64> {
    let mut out: BTreeMap<u32, u64> = (0..ring.partition_count()).map(|p| (p, 0)).collect();
    for key in keys {
        *out.entry(ring.partition_of(key.as_bytes()).0).or_default() += 1;
    }
    out
}

/// Accepts key counts equal to `expected`, or says where they differ.
pub fn counts_are(
    expected: BTreeMap<u32, u64>,
) -> impl Fn(&BTreeMap<u32, u64>) -> Result<(), String> {
    move |keys| {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(p, want)| keys.get(p) != Some(want))
            .map(|(p, want)| format!("{p}: {:?} keys, expected {want}", keys.get(p)))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} partitions have the wrong key count, first: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(3)]
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writes and reads
// ---------------------------------------------------------------------------------------

/// Attempts of a request that a coordinator answers `Unavailable`.
pub const UNAVAILABLE_ATTEMPTS: usize = 5;
/// Pause before another attempt.
pub const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Runs `request` until it gives something other than [`ClientError::Unavailable`], at
/// most [`UNAVAILABLE_ATTEMPTS`] times. A coordinator answers `Unavailable` before doing
/// anything, so another attempt is safe; it does so while it counts a peer down, which a
/// single failed message makes it do (for a probe interval) even in a healthy cluster, and
/// quorums of all N replicas (W=3, R=3) cannot route around that.
pub async fn unless_unavailable<T, Fut>(
    what: &str,
    request: impl FnMut() -> Fut,
) -> Result<T, String>
where
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    retry_unavailable(what, request)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// [`unless_unavailable`] keeping the error's type.
async fn retry_unavailable<T, Fut>(
    what: &str,
    mut request: impl FnMut() -> Fut,
) -> Result<T, ClientError>
where
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for attempt in 1.. {
        match request().await {
            Err(e @ ClientError::Unavailable { .. }) if attempt < UNAVAILABLE_ATTEMPTS => {
                eprintln!(
                    "{what}: {e}; attempt {} of {UNAVAILABLE_ATTEMPTS}",
                    attempt + 1
                );
                tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
            }
            other => return other,
        }
    }
    unreachable!("the last attempt returns")
}

/// Attempts of a put that its coordinator answers `Incomplete`.
pub const INCOMPLETE_ATTEMPTS: usize = 3;

/// Puts `value` at `key` (over `context`) with quorum `w`; returns the new context. A
/// put answered `Incomplete` (stored by its coordinator, then a replica's copy failed:
/// with handoff off and W = N, one failed message does it) is settled as the error
/// advises: the key is read with R=2 (which meets a replica holding what landed) and
/// written again over that read's context, so what landed is replaced instead of staying
/// as a sibling; at most [`INCOMPLETE_ATTEMPTS`] times.
async fn put_settled(
    client: &Client,
    key: &str,
    value: &str,
    mut context: Option<Context>,
    w: u8,
) -> Result<Context, String> {
    let what = format!("put {key}");
    let opts = WriteOptions::default().w(w);
    for attempt in 1..=INCOMPLETE_ATTEMPTS {
        let put = retry_unavailable(&what, || {
            client
                .put_with(key, value)
                .context(context.as_ref())
                .options(opts)
                .send()
        })
        .await;
        match put {
            Err(e @ ClientError::Server(RequestError::Incomplete { .. }))
                if attempt < INCOMPLETE_ATTEMPTS =>
            {
                eprintln!("{what}: {e}; reading it to write it again over what landed");
                let read = retry_unavailable(&format!("get {key}"), || {
                    client
                        .get_with(key)
                        .options(ReadOptions::default().r(2))
                        .send()
                })
                .await
                .map_err(|e| format!("get {key} after an incomplete put: {e}"))?;
                context = Some(read.context);
            }
            other => return other.map_err(|e| format!("{what}: {e}")),
        }
    }
    unreachable!("the last attempt returns")
}

/// Puts every pair (with `context` when one is given) with quorum `w`, at most
/// [`IN_FLIGHT`] at once (a put answered `Incomplete` is settled by [`put_settled`]);
/// panics listing the failures. Returns each key's new context.
pub async fn put_with_contexts(
    client: &Client,
    writes: Vec<(String, String, Option<Context>)>,
    w: u8,
) -> BTreeMap<String, Context> {
    let count = writes.len();
    let contexts = Arc::new(Mutex::new(BTreeMap::new()));
    let errors = run_bounded(writes, IN_FLIGHT, |(key, value, context)| {
        let (client, contexts) = (client.clone(), contexts.clone());
        async move {
            let ctx = put_settled(&client, &key, &value, context, w).await?;
            contexts.lock().unwrap().insert(key, ctx);
            Ok(())
        }
    })
    .await;
    assert_none_failed(&errors, count, &format!("puts with W={w} failed"));
    Arc::try_unwrap(contexts).unwrap().into_inner().unwrap()
}

/// Puts every pair as a new key (no context); returns each key's context.
pub async fn put_new(
    client: &Client,
    kvs: &[(String, String)],
    w: u8,
) -> BTreeMap<String, Context> {
    let writes = kvs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), None))
        .collect();
    put_with_contexts(client, writes, w).await
}

/// Deletes every key with its context and quorum `w`, at most [`IN_FLIGHT`] at once;
/// panics listing the failures.
pub async fn delete_all(client: &Client, deletes: Vec<(String, Context)>, w: u8) {
    let count = deletes.len();
    let errors = run_bounded(deletes, IN_FLIGHT, |(key, context)| {
        let client = client.clone();
        async move {
            let opts = WriteOptions::default().w(w);
            unless_unavailable(&format!("delete {key}"), || {
                client
                    .delete_with(&key)
                    .context(&context)
                    .options(opts)
                    .send()
            })
            .await
            .map(|_| ())
        }
    })
    .await;
    assert_none_failed(&errors, count, &format!("deletes with W={w} failed"));
}

/// Reads every key with quorum `r`, at most [`IN_FLIGHT`] at once, and panics unless each
/// answers as expected: `Some(v)` found with exactly the value `v`, `None` not found
/// (and no value).
pub async fn assert_reads(client: &Client, expected: &[(String, Option<String>)], r: u8) {
    let errors = run_bounded(expected.to_vec(), IN_FLIGHT, |(key, want)| {
        let client = client.clone();
        async move {
            let read =
                unless_unavailable(&format!("get {key}"), || client.get_with(&key).r(r).send())
                    .await?;
            check_read(&key, &read, want.as_deref())
        }
    })
    .await;
    assert_none_failed(
        &errors,
        expected.len(),
        &format!("reads with R={r} answered wrong"),
    );
}

/// Asserts that no running node of `cluster` holds a hint.
pub async fn assert_no_hints(cluster: &mut Cluster) {
    let running: Vec<NodeId> = cluster
        .running()
        .into_iter()
        .map(|i| cluster.id(i))
        .collect();
    let status = cluster.status_client().await;
    let hints = pending_hints(&status, &running)
        .await
        .unwrap_or_else(|e| panic!("reading pending hints: {e}"));
    status.close().await;
    assert!(hints.is_empty(), "hints are pending: {hints:?}");
}

/// The `(key, value)` pairs as expected reads: every key found with its value.
pub fn found(kvs: &[(String, String)]) -> Vec<(String, Option<String>)> {
    kvs.iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect()
}

/// Now, as the nodes' engines read their clock: microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_micros()).unwrap()
}
/// Every key of `kvs` expected not found.
pub fn not_found(kvs: &[(String, String)]) -> Vec<(String, Option<String>)> {
    kvs.iter().map(|(k, _)| (k.clone(), None)).collect()
}
