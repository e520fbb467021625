//! Writing and reading many keys through the SDK, and the hints nodes hold.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_client::{Client, GetResult, NodeId};

use super::{run_bounded, wait_until};

/// Key/value pairs `{prefix}-{i}` → `{prefix}-value-{i}` for `i` in `range`.
pub fn key_values(prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("{prefix}-{i:05}"), format!("{prefix}-value-{i:05}")))
        .collect()
}

/// Puts every pair with quorum `w` (no context: every key is new), at most `limit` in
/// flight; panics listing the failures if any put fails.
pub async fn put_all(client: &Client, kvs: &[(String, String)], w: u8, limit: usize) {
    let items = kvs.to_vec();
    let errors = run_bounded(items, limit, |(k, v)| {
        let client = client.clone();
        async move {
            client
                .put_with(&k, v)
                .w(w)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("put {k}: {e}"))
        }
    })
    .await;
    assert_none_failed(&errors, kvs.len(), &format!("puts with W={w} failed"));
}

/// Reads every key with quorum `r`, at most `limit` in flight; panics unless every key is
/// found with exactly its value.
pub async fn assert_all_readable(client: &Client, kvs: &[(String, String)], r: u8, limit: usize) {
    let items = kvs.to_vec();
    let errors = run_bounded(items, limit, |(k, v)| {
        let client = client.clone();
        async move {
            let read = client
                .get_with(&k)
                .r(r)
                .send()
                .await
                .map_err(|e| format!("get {k}: {e}"))?;
            check_read(&k, &read, Some(&v))
        }
    })
    .await;
    assert_none_failed(&errors, kvs.len(), &format!("reads with R={r} failed"));
}

/// Checks that `read` of `key` answered `want`: `Some(v)` found with exactly the value
/// `v`, `None` not found (and no value). `Err` says what it answered instead.
pub fn check_read(key: &str, read: &GetResult, want: Option<&str>) -> Result<(), String> {
    let ok = match want {
        Some(v) => read.found && read.values == vec![v.as_bytes().to_vec()],
        None => !read.found && read.values.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "get {key}: found={} values={:?}, expected {want:?}",
            read.found,
            read.values
                .iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>()
        ))
    }
}

/// The values a read answered, as text, sorted (siblings come in no fixed order).
pub fn values_of(read: &GetResult) -> Vec<String> {
    let mut values: Vec<String> = read
        .values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    values.sort();
    values
}

/// Panics unless `errors`, of `total` requests, is empty: "{count} of {total} {what}",
/// with the first few errors.
pub fn assert_none_failed(errors: &[String], total: usize, what: &str) {
    assert!(
        errors.is_empty(),
        "{} of {total} {what}; first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// Pending hints per (reporter, target), from the status of each of `reporters`.
pub async fn pending_hints(
    client: &Client,
    reporters: &[NodeId],
) -> Result<BTreeMap<(NodeId, NodeId), u64>, String> {
    let mut out = BTreeMap::new();
    for reporter in reporters {
        let report = client
            .status(Some(reporter))
            .await
            .map_err(|e| format!("status of {reporter}: {e}"))?;
        for m in &report.members {
            if m.pending_hints > 0 {
                out.insert((reporter.clone(), m.id.clone()), m.pending_hints);
            }
        }
    }
    Ok(out)
}

/// Polls until no node of `reporters` holds a hint for anyone.
pub async fn wait_hints_drained(client: &Client, reporters: &[NodeId], timeout: Duration) {
    wait_until(
        "every pending hint to be delivered",
        timeout,
        || async move {
            let hints = pending_hints(client, reporters).await?;
            if hints.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "pending hints (reporter, target) -> count: {hints:?}"
                ))
            }
        },
    )
    .await
}
