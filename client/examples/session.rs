//! Sessions: read your own writes and never go back in time, even at R = 1.
//!
//! `cargo run -p shoal-client --example session -- shoal-dev/client.toml`

use shoal_client::{Client, ClientConfig, ClientError, ReadOptions, WriteOptions};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shoal-dev/client.toml".into());
    let client = Client::connect(ClientConfig::load(path.as_ref())?).await?;
    let session = client.session();
    let key = format!("profile:{}", std::process::id());
    // W = 1: acknowledged as soon as one replica has it.
    session
        .put_opts(&key, "Ada", None, WriteOptions::default().w(1))
        .await?;
    // R = 1 could be answered by a replica that has not received it yet; the session
    // then asks more replicas, so this read sees the write (or fails NotCovered).
    match session.get_opts(&key, ReadOptions::default().r(1)).await {
        Ok(read) => {
            for value in &read.values {
                println!("session read: {}", String::from_utf8_lossy(value));
            }
            session
                .delete_opts(&key, Some(&read.context), WriteOptions::default())
                .await?;
        }
        Err(e @ ClientError::NotCovered { .. }) => {
            println!("not covered yet, retry later: {e}");
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    println!("keys remembered: {}", session.keys());
    client.close().await;
    Ok(())
}
