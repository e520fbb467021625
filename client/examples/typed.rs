//! Typed values (the `serde` feature): a struct stored as JSON, updated as a struct.
//!
//! `cargo run -p shoal-client --features serde --example typed -- shoal-dev/client.toml`

use serde::{Deserialize, Serialize};
use shoal_client::{Client, ClientConfig, ClientError};

#[derive(Debug, Serialize, Deserialize)]
struct Profile {
    name: String,
    visits: u64,
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shoal-dev/client.toml".into());
    let client = Client::connect(ClientConfig::load(path.as_ref())?).await?;
    let key = format!("profile:{}", std::process::id());

    let ada = Profile {
        name: "Ada".into(),
        visits: 0,
    };
    client.put_json(&key, &ada, None).await?;
    for _ in 0..3 {
        // Siblings, if any, are resolved by keeping the most visits.
        client
            .update_json(&key, |siblings: Vec<Profile>| {
                let mut best = siblings
                    .into_iter()
                    .max_by_key(|p| p.visits)
                    .unwrap_or(Profile {
                        name: "Ada".into(),
                        visits: 0,
                    });
                best.visits += 1;
                best
            })
            .await?;
    }
    let read = client.get_json::<Profile>(&key).await?;
    println!("{:?}", read.values);
    assert_eq!(read.values[0].visits, 3);
    client
        .delete_with(&key)
        .context(&read.context)
        .send()
        .await?;
    client.close().await;
    Ok(())
}
