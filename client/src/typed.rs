//! Typed values (the `serde` feature): values stored as JSON, read back as `T`.
//!
//! JSON because any language can read it and `serde_json` is what most applications
//! already use; a key holds bytes either way, so typed and raw access can be mixed (a
//! raw read of a typed key returns the JSON text).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::context::Context;
use crate::error::ClientError;

/// The answer to [`Client::get_json`]: [`GetResult`](crate::GetResult) with decoded
/// values.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedGet<T> {
    /// Whether the key has a value.
    pub found: bool,
    /// The sibling values, decoded.
    pub values: Vec<T>,
    /// The context to write with next.
    pub context: Context,
    /// When each value was written (see [`GetResult::written_at`](crate::GetResult::written_at)).
    pub written_at: Vec<std::time::SystemTime>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Codec(format!("encoding a value: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Codec(format!("decoding a value: {e}")))
}

impl Client {
    /// Reads `key` and decodes every sibling from JSON; a sibling that does not decode
    /// as `T` fails the call with [`ClientError::Codec`].
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<TypedGet<T>, ClientError> {
        let read = self.get(key).await?;
        let values = read
            .values
            .iter()
            .map(|v| decode(v))
            .collect::<Result<_, _>>()?;
        Ok(TypedGet {
            found: read.found,
            values,
            context: read.context,
            written_at: read.written_at,
        })
    }

    /// Writes `value` as JSON under `key`, replacing what `context` covers (`None` adds a
    /// sibling). Returns the write's context.
    pub async fn put_json<T: Serialize>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        context: Option<&Context>,
    ) -> Result<Context, ClientError> {
        self.put_with(key, encode(value)?)
            .context(context)
            .send()
            .await
    }

    /// [`Client::update`] for JSON values: `resolve` gets the decoded siblings (none when
    /// the key is not found) and returns the value to write.
    pub async fn update_json<T, F>(
        &self,
        key: impl AsRef<[u8]>,
        mut resolve: F,
    ) -> Result<Context, ClientError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Vec<T>) -> T,
    {
        self.try_update_with(key, move |siblings| {
            let values = siblings
                .iter()
                .map(|v| decode(v))
                .collect::<Result<Vec<T>, _>>()?;
            encode(&resolve(values))
        })
        .send()
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_json_is_a_codec_error() {
        let cart = vec!["milk".to_owned(), "eggs".to_owned()];
        let bytes = encode(&cart).unwrap();
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), cart);
        assert!(matches!(
            decode::<Vec<String>>(b"not json"),
            Err(ClientError::Codec(m)) if m.contains("decoding")
        ));
        assert!(matches!(decode::<u8>(b"300"), Err(ClientError::Codec(_))));
    }
}
