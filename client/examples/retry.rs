//! The retry policy: how a client retries transient errors, and why writes are retried
//! only when certainly not applied unless declared idempotent.
//!
//! `cargo run -p shoal-client --example retry -- shoal-dev/client.toml`

use std::time::Duration;

use shoal_client::{Client, ClientConfig, ClientError, RetryPolicy};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shoal-dev/client.toml".into());
    let mut config = ClientConfig::load(path.as_ref())?;
    // Up to 5 tries, waits of 20 ms doubling up to 500 ms, each jittered within
    // [half, full]. Set writes idempotent only if a write applied twice (two siblings
    // with the same value) is harmless to you: here the values are sets.
    config.retry = RetryPolicy::default()
        .max_attempts(5)
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        .idempotent_writes(true);
    for retry in 0..5 {
        println!(
            "retry {retry} waits at most {:?}",
            config.retry.delay(retry, u64::MAX)
        );
    }
    let client = Client::connect(config).await?;
    let key = format!("retry:{}", std::process::id());
    match client.put(&key, "x").await {
        Ok(_) => println!("written"),
        Err(e) if e.is_retryable() => println!("still failing after retries: {e}"),
        Err(e) => return Err(e),
    }
    let read = client.get(&key).await?;
    client
        .delete_with(&key)
        .context(&read.context)
        .send()
        .await?;
    client.close().await;
    Ok(())
}
