//! The key layout of the objects space: a big-endian partition id, then the user key.
//!
//! Big-endian makes byte order equal numeric order, so each partition's objects form one
//! contiguous key range, and partitions follow each other in id order.

use crate::PartitionId;

/// Length of the partition prefix of an object key.
pub const PARTITION_PREFIX_BYTES: usize = 4;

/// The stored key of `key` in partition `p`: `be32(p) ++ key`.
pub fn object_key(p: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(PARTITION_PREFIX_BYTES + key.len());
    raw.extend_from_slice(&p.0.to_be_bytes());
    raw.extend_from_slice(key);
    raw
}

/// Splits a stored object key into its partition and user key; `None` when `raw` is
/// shorter than the prefix (no object key is).
pub fn split_object_key(raw: &[u8]) -> Option<(PartitionId, &[u8])> {
    let (prefix, key) = raw.split_first_chunk::<PARTITION_PREFIX_BYTES>()?;
    Some((PartitionId(u32::from_be_bytes(*prefix)), key))
}

/// The stored-key range `[start, end)` holding exactly partition `p`'s objects; `end` is
/// `None` for the last partition (`u32::MAX`), whose range runs to the end of the space.
pub fn partition_bounds(p: PartitionId) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = p.0.to_be_bytes().to_vec();
    let end = p.0.checked_add(1).map(|next| next.to_be_bytes().to_vec());
    (start, end)
}

/// The smallest key strictly greater than `key`: `key ++ [0]`.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_key_round_trips_and_orders_by_partition() {
        for p in [0u32, 1, 255, 256, 65_536, u32::MAX - 1, u32::MAX] {
            for key in [&b""[..], b"a", b"\xff\xff\xff\xff\xff"] {
                let raw = object_key(PartitionId(p), key);
                assert_eq!(split_object_key(&raw), Some((PartitionId(p), key)));
            }
        }
        assert!(object_key(PartitionId(1), b"\xff\xff") < object_key(PartitionId(2), b""));
        assert!(object_key(PartitionId(255), b"z") < object_key(PartitionId(256), b"a"));
    }

    #[test]
    fn short_raw_keys_are_not_object_keys() {
        assert_eq!(split_object_key(b""), None);
        assert_eq!(split_object_key(b"\0\0\0"), None);
    }

    #[test]
    fn partition_bounds_cover_exactly_one_partition() {
        let (start, end) = partition_bounds(PartitionId(7));
        let end = end.unwrap();
        assert!(start <= object_key(PartitionId(7), b""));
        assert!(object_key(PartitionId(7), &[0xff; 64]) < end);
        assert!(object_key(PartitionId(8), b"") >= end);
        assert!(object_key(PartitionId(6), &[0xff; 64]) < start);
        assert_eq!(partition_bounds(PartitionId(u32::MAX)).1, None);
    }

    #[test]
    fn successor_is_the_next_key() {
        assert_eq!(successor(b"ab"), b"ab\0");
        assert!(successor(b"ab").as_slice() > &b"ab"[..]);
        assert!(successor(b"ab").as_slice() < &b"ab\0\0"[..]);
    }
}
