//! Sibling resolution with a shopping cart: two devices add items to one cart without
//! seeing each other's write, leaving two siblings; the next update merges them by set
//! union, so no item is lost.
//!
//! `cargo run -p shoal-client --example shopping_cart -- shoal-dev/client.toml`

use shoal_client::{resolve, Client, ClientConfig, ClientError};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shoal-dev/client.toml".into());
    let client = Client::connect(ClientConfig::load(path.as_ref())?).await?;
    let cart = format!("cart:{}", std::process::id());

    // Both devices read the empty cart, then write without seeing each other.
    let seen = client.get(&cart).await?;
    client
        .put_with(&cart, "milk\neggs")
        .context(&seen.context)
        .send()
        .await?;
    client
        .put_with(&cart, "bread")
        .context(&seen.context)
        .send()
        .await?;
    let read = client.get(&cart).await?;
    println!(
        "siblings after two concurrent writes: {}",
        read.values.len()
    );

    // Adding an item resolves them: the union of every sibling, plus the new item.
    client
        .update(&cart, |siblings| {
            let mut all = siblings.to_vec();
            all.push(b"apples".to_vec());
            resolve::union_lines(&all)
        })
        .await?;
    let read = client.get(&cart).await?;
    assert_eq!(read.values.len(), 1);
    println!(
        "cart: {}",
        String::from_utf8_lossy(&read.values[0]).replace('\n', ", ")
    );
    client
        .delete_with(&cart)
        .context(&read.context)
        .send()
        .await?;
    client.close().await;
    Ok(())
}
