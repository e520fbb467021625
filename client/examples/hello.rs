//! Hello world: connect, write, read, delete.
//!
//! `cargo run -p shoal-client --example hello -- shoal-dev/client.toml`

use shoal_client::{Client, ClientConfig, ClientError};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shoal-dev/client.toml".into());
    let client = Client::connect(ClientConfig::load(path.as_ref())?).await?;

    client.put("hello", "world").await?;
    let read = client.get("hello").await?;
    for value in &read.values {
        println!("hello = {}", String::from_utf8_lossy(value));
    }
    // Delete exactly what the read saw.
    client
        .delete_with("hello")
        .context(&read.context)
        .send()
        .await?;
    assert!(!client.get("hello").await?.found);
    println!("deleted");
    client.close().await;
    Ok(())
}
