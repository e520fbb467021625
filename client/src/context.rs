//! [`Context`]: the causal context a read or write returns and the next write hands back.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_proto::wire::{decode_context, encode_context};
use shoal_proto::CausalContext;

use crate::error::ClientError;

/// Longest context string accepted by [`Context::from_str`], in characters (1 MiB): far
/// above any real context, and a bound on what a pasted string can make us decode.
pub const MAX_CONTEXT_CHARS: usize = 1 << 20;

/// What a read saw (or a write made), to hand back on the next write of the same key.
///
/// A write with a context replaces exactly the values that context covers; a write without
/// one is concurrent with everything, so it becomes a new sibling. Treat it as opaque: its
/// string form ([`Display`](fmt::Display) / [`FromStr`], also its serde form) is the
/// base64url (no padding) encoding of the versioned wire bytes, safe in URLs, shells and
/// JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Context(CausalContext);

impl Context {
    /// The context that has seen nothing (a write with it is concurrent with every value).
    pub fn empty() -> Context {
        Context(CausalContext::new())
    }

    /// Whether the context has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds what `other` has seen: afterwards a write with this context replaces
    /// everything either context covered. Use it to combine the contexts of several reads
    /// or writes of the same key (contexts of different keys should not be mixed: a write
    /// would claim to have seen writes of the other key, which is harmless but useless).
    pub fn merge(&mut self, other: &Context) {
        self.0.merge(&other.0);
    }

    /// The union of two contexts, as [`merge`](Context::merge) makes it.
    pub fn merged(mut self, other: &Context) -> Context {
        self.merge(other);
        self
    }

    /// The causal context inside, for code that works with `shoal-proto` types.
    pub fn as_causal(&self) -> &CausalContext {
        &self.0
    }

    /// The causal context inside, by value.
    pub fn into_causal(self) -> CausalContext {
        self.0
    }
}

impl From<CausalContext> for Context {
    fn from(ctx: CausalContext) -> Context {
        Context(ctx)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(encode_context(&self.0)))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Context({self})")
    }
}

impl FromStr for Context {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Context, ClientError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ClientError::InvalidContext(
                "the context string is empty".into(),
            ));
        }
        if s.len() > MAX_CONTEXT_CHARS {
            return Err(ClientError::InvalidContext(format!(
                "the context string is {} characters, the limit is {MAX_CONTEXT_CHARS}",
                s.len()
            )));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| ClientError::InvalidContext(format!("not base64url: {e}")))?;
        let ctx = decode_context(&bytes)
            .map_err(|e| ClientError::InvalidContext(format!("not a Shoal context: {e}")))?;
        Ok(Context(ctx))
    }
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Context, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Actor, Dot};

    fn sample() -> Context {
        let mut ctx = CausalContext::new();
        ctx.insert(Dot::new(Actor(7), 1));
        ctx.insert(Dot::new(Actor(7), 2));
        ctx.insert(Dot::new(Actor(9), 5));
        Context(ctx)
    }

    #[test]
    fn context_string_round_trips() {
        for ctx in [Context::empty(), sample()] {
            let s = ctx.to_string();
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{s} is not unpadded base64url"
            );
            let back: Context = s.parse().unwrap();
            assert_eq!(back, ctx);
        }
    }

    #[test]
    fn context_serde_is_its_string() {
        let ctx = sample();
        let json = serde_json::to_string(&ctx).unwrap();
        assert_eq!(json, format!("\"{ctx}\""));
        let back: Context = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ctx);
        assert!(serde_json::from_str::<Context>("\"garbage!\"").is_err());
    }

    #[test]
    fn garbage_context_strings_are_refused() {
        for garbage in [
            "",
            "   ",
            "not base64 at all!",
            "AAAA",               // decodes, but version 0
            "Ag",                 // version 2
            "AQ",                 // version 1, no body
            "AQAAAAAAAAAAAAAAAA", // trailing or malformed body
            "AQ==",               // padding is not part of the format
        ] {
            match garbage.parse::<Context>() {
                Err(ClientError::InvalidContext(_)) => {}
                other => panic!("{garbage:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn merge_is_the_union_of_what_both_saw() {
        let mut a = CausalContext::new();
        a.insert(Dot::new(Actor(1), 1));
        let mut b = CausalContext::new();
        b.insert(Dot::new(Actor(2), 3));
        let mut ctx = Context(a);
        ctx.merge(&Context(b.clone()));
        assert!(ctx.as_causal().covers(Dot::new(Actor(1), 1)));
        assert!(ctx.as_causal().covers(Dot::new(Actor(2), 3)));
        assert!(!ctx.as_causal().covers(Dot::new(Actor(3), 1)));
        assert_eq!(Context::empty().merged(&Context(b.clone())), Context(b));
        assert_eq!(ctx.clone().merged(&ctx), ctx);
    }

    #[test]
    fn oversized_context_string_is_refused_without_decoding() {
        let huge = "A".repeat(MAX_CONTEXT_CHARS + 1);
        assert!(matches!(
            huge.parse::<Context>(),
            Err(ClientError::InvalidContext(m)) if m.contains("limit")
        ));
    }
}
