//! Persistence: a version byte, then the shape, the segment hashes and the key counts.
//! Inner nodes are not stored; they are recomputed on decode, so they cannot disagree with
//! the leaves.

use serde::{Deserialize, Serialize, Serializer};

use super::{MerkleError, MerkleShape, MerkleTree};

/// Version of the persisted tree format, the first byte of [`MerkleTree::encode`] and the
/// first field of its serde form. It covers the layout and the hash seeds
/// ([`SEGMENT_HASH_SEED`](super::SEGMENT_HASH_SEED),
/// [`PAIR_HASH_SEED`](super::PAIR_HASH_SEED)).
pub const MERKLE_FORMAT_VERSION: u8 = 1;

/// The serde form of a tree, borrowed for writing.
#[derive(Serialize)]
struct RawTreeRef<'a> {
    version: u8,
    segments: u32,
    fanout: u32,
    leaves: &'a [u64],
    counts: &'a [u64],
}

/// The serde form of a tree, owned for reading; validated by `TryFrom`.
#[derive(Deserialize)]
struct RawTree {
    version: u8,
    segments: u32,
    fanout: u32,
    leaves: Vec<u64>,
    counts: Vec<u64>,
}

impl TryFrom<RawTree> for MerkleTree {
    type Error = MerkleError;

    fn try_from(raw: RawTree) -> Result<MerkleTree, MerkleError> {
        if raw.version != MERKLE_FORMAT_VERSION {
            return Err(MerkleError::UnsupportedVersion {
                found: raw.version,
                supported: MERKLE_FORMAT_VERSION,
            });
        }
        let shape = MerkleShape::new(raw.segments, raw.fanout)?;
        MerkleTree::from_segments(shape, raw.leaves, raw.counts)
    }
}

impl Serialize for MerkleTree {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawTreeRef {
            version: MERKLE_FORMAT_VERSION,
            segments: self.shape().segments(),
            fanout: self.shape().fanout(),
            leaves: self.leaves(),
            counts: self.segment_counts(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MerkleTree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<MerkleTree, D::Error> {
        let raw = RawTree::deserialize(deserializer)?;
        MerkleTree::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl MerkleTree {
    /// Encode for persistence: [`MERKLE_FORMAT_VERSION`], then the postcard form (shape,
    /// segment hashes, key counts per segment).
    ///
    /// A tree persisted at a clean shutdown is only as good as that moment: a node that
    /// stopped uncleanly must rebuild with [`MerkleTree::from_pairs`] instead of loading.
    pub fn encode(&self) -> Vec<u8> {
        // The version is the struct's first field, a u8, which postcard writes as one byte.
        // Serialising plain data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decode bytes made by [`MerkleTree::encode`]: rejects other versions, invalid
    /// shapes, wrong lengths and trailing bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<MerkleTree, MerkleError> {
        let &version = bytes.first().ok_or(MerkleError::Empty)?;
        if version != MERKLE_FORMAT_VERSION {
            return Err(MerkleError::UnsupportedVersion {
                found: version,
                supported: MERKLE_FORMAT_VERSION,
            });
        }
        let (raw, rest): (RawTree, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| MerkleError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(MerkleError::Malformed(format!(
                "{} trailing bytes after the tree",
                rest.len()
            )));
        }
        MerkleTree::try_from(raw)
    }
}
