//! Batches: [`Client::get_many`] and [`Client::put_many`] send one request per key, grouped
//! by the node each key goes to first, with a bounded number in flight per node, so that
//! a batch keeps every coordinator busy without flooding any of them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::client::{Client, GetResult};
use crate::context::Context;
use crate::error::ClientError;

/// Most keys one batch call takes.
pub const MAX_BATCH_KEYS: usize = 10_000;
/// Requests a batch keeps in flight to one coordinator.
pub const BATCH_PER_NODE: usize = 8;

type Op<T> = Arc<
    dyn Fn(Client, usize) -> Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send>>
        + Send
        + Sync,
>;

impl Client {
    /// Reads every key (with the cluster's defaults); the results are in the keys' order,
    /// each its own success or error. More than [`MAX_BATCH_KEYS`] keys is
    /// [`ClientError::InvalidOptions`].
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Result<GetResult, ClientError>>, ClientError> {
        let keys: Arc<Vec<Vec<u8>>> =
            Arc::new(keys.into_iter().map(|k| k.as_ref().to_vec()).collect());
        let op_keys = keys.clone();
        let op: Op<GetResult> = Arc::new(move |client, i| {
            let keys = op_keys.clone();
            Box::pin(async move { client.get(&keys[i]).await })
        });
        self.run_grouped(&keys, op).await
    }

    /// Writes every `(key, value)` without a context (each value becomes a sibling of
    /// what its key holds, like [`Client::put`]); the write contexts are in the items'
    /// order, each its own success or error.
    pub async fn put_many<K: AsRef<[u8]>, V: Into<Vec<u8>>>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<Result<Context, ClientError>>, ClientError> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = items
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_vec(), v.into()))
            .collect();
        let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| k.clone()).collect();
        let items = Arc::new(items);
        let op: Op<Context> = Arc::new(move |client, i| {
            let items = items.clone();
            Box::pin(async move {
                let (key, value) = &items[i];
                client.put(key, value.clone()).await
            })
        });
        self.run_grouped(&keys, op).await
    }

    /// Runs `op` for every key index: one task per first-choice node, each with at most
    /// [`BATCH_PER_NODE`] requests in flight.
    async fn run_grouped<T: Send + 'static>(
        &self,
        keys: &[Vec<u8>],
        op: Op<T>,
    ) -> Result<Vec<Result<T, ClientError>>, ClientError> {
        if keys.len() > MAX_BATCH_KEYS {
            return Err(ClientError::InvalidOptions(format!(
                "a batch takes at most {MAX_BATCH_KEYS} keys, got {}",
                keys.len()
            )));
        }
        let mut groups: HashMap<Option<SocketAddr>, Vec<usize>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            groups.entry(self.first_choice(key)).or_default().push(i);
        }
        let mut nodes = JoinSet::new();
        for (_, indices) in groups {
            let (client, op) = (self.clone(), op.clone());
            nodes.spawn(async move {
                let mut out = Vec::with_capacity(indices.len());
                let mut inflight = JoinSet::new();
                for i in indices {
                    if inflight.len() >= BATCH_PER_NODE {
                        if let Some(done) = inflight.join_next().await {
                            out.push(done.expect("a batch request panicked"));
                        }
                    }
                    let (client, op) = (client.clone(), op.clone());
                    inflight.spawn(async move { (i, op(client, i).await) });
                }
                while let Some(done) = inflight.join_next().await {
                    out.push(done.expect("a batch request panicked"));
                }
                out
            });
        }
        let mut results: Vec<Option<Result<T, ClientError>>> =
            (0..keys.len()).map(|_| None).collect();
        while let Some(group) = nodes.join_next().await {
            for (i, result) in group.expect("a batch group panicked") {
                results[i] = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every key index is run once"))
            .collect())
    }
}
