//! Node identities.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{excerpt, RingError};

/// The longest node id (and zone name), in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A node's identity: 1 to 64 characters of `[A-Za-z0-9_.-]`.
///
/// The id names the node in the ring, in version vectors and in hints, so it is validated when
/// constructed and when deserialized: a `NodeId` value is always well formed. Cloning is cheap
/// (a shared, immutable string); ordering and hashing are those of the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates `s` as a node id.
    ///
    /// # Errors
    /// [`RingError::InvalidNodeId`] if `s` is empty, longer than [`MAX_NODE_ID_LEN`] bytes, or
    /// has a character outside `[A-Za-z0-9_.-]`.
    pub fn new(s: impl Into<String>) -> Result<NodeId, RingError> {
        let s = s.into();
        match check_name(&s) {
            Ok(()) => Ok(NodeId(Arc::from(s))),
            Err(reason) => Err(RingError::InvalidNodeId {
                id: excerpt(&s),
                reason,
            }),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The shared naming rule of node ids and zones; `Err` says what is wrong.
pub(crate) fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > MAX_NODE_ID_LEN {
        return Err("must be at most 64 bytes");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("may only contain A-Z, a-z, 0-9, '_', '.' and '-'");
    }
    Ok(())
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NodeId").field(&&*self.0).finish()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeId {
    type Err = RingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

impl TryFrom<String> for NodeId {
    type Error = RingError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl TryFrom<&str> for NodeId {
    type Error = RingError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        NodeId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::IntoDeserializer;

    #[test]
    fn valid_ids_are_accepted_and_displayed_verbatim() {
        for s in ["a", "node-1", "n_2.example", "A.b-C_9", &"x".repeat(64)] {
            let id = NodeId::new(s).unwrap();
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
            assert_eq!(s.parse::<NodeId>().unwrap(), id);
        }
    }

    #[test]
    fn empty_id_is_rejected() {
        assert!(matches!(
            NodeId::new(""),
            Err(RingError::InvalidNodeId {
                reason: "must not be empty",
                ..
            })
        ));
    }

    #[test]
    fn id_longer_than_64_bytes_is_rejected_and_error_text_is_bounded() {
        let err = NodeId::new("y".repeat(10_000)).unwrap_err();
        match &err {
            RingError::InvalidNodeId { id, .. } => assert!(id.chars().count() <= 81),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().len() < 300);
    }

    #[test]
    fn id_with_forbidden_characters_is_rejected() {
        for s in ["a b", "a/b", "é", "a:b", "a\n", "node\0"] {
            assert!(
                matches!(NodeId::new(s), Err(RingError::InvalidNodeId { .. })),
                "{s:?} accepted"
            );
        }
    }

    #[test]
    fn deserialize_validates_the_id() {
        let good: StrDeserializer<'_, ValueError> = "node-7".into_deserializer();
        assert_eq!(NodeId::deserialize(good).unwrap().as_str(), "node-7");
        let bad: StrDeserializer<'_, ValueError> = "no spaces".into_deserializer();
        assert!(NodeId::deserialize(bad).is_err());
    }

    #[test]
    fn ids_order_and_borrow_like_their_strings() {
        let a = NodeId::new("a").unwrap();
        let b = NodeId::new("b").unwrap();
        assert!(a < b);
        let set: std::collections::BTreeSet<NodeId> = [b.clone(), a.clone()].into();
        assert!(set.contains("a"));
        assert_eq!(format!("{a:?}"), "NodeId(\"a\")");
    }
}
