//! Hints: objects kept for a primary that was down, one per (target, key), bounded per
//! target in count and bytes.
//!
//! Layout in the hints space: `len(target) ‖ target ‖ be32(partition) ‖ key`, so one
//! target's hints are one range; value `version ‖ be64(stored_at µs) ‖ object`.
//!
//! Every access applies the hint TTL ([`HintRecord::content_expired`], proto's one rule):
//! an expired hint reads as none and is replaced, not merged into, by a new one; removals
//! are conditional on what was listed or delivered, so a hint stored in between stays.

use std::time::Duration;

use shoal_proto::{
    HintRecord, HintRejection, Object, StorageFailure, StorageReply, StorageResult, Time,
};
use shoal_ring::{NodeId, PartitionId};
use shoal_storage::{Space, Storage, WriteBatch};

use super::{engine_failure, raw_digest, Executor};

/// Version byte of an encoded hint.
const HINT_FORMAT_VERSION: u8 = 1;

/// The hints-space key of a hint.
pub fn hint_key(target: &NodeId, partition: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut out = hint_prefix(target);
    out.extend_from_slice(&partition.0.to_be_bytes());
    out.extend_from_slice(key);
    out
}

pub(super) fn hint_prefix(target: &NodeId) -> Vec<u8> {
    let t = target.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + t.len() + 4);
    // Node ids are at most 64 bytes, so the length fits a byte.
    out.push(u8::try_from(t.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(t);
    out
}

/// The first key after every key that starts with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(super) fn split_hint_key(raw: &[u8]) -> Option<(NodeId, PartitionId, &[u8])> {
    let (&len, rest) = raw.split_first()?;
    let len = usize::from(len);
    if rest.len() < len + 4 {
        return None;
    }
    let target = std::str::from_utf8(&rest[..len]).ok()?;
    let target = NodeId::new(target).ok()?;
    let p = u32::from_be_bytes(rest[len..len + 4].try_into().ok()?);
    Some((target, PartitionId(p), &rest[len + 4..]))
}

fn encode_hint(stored_at: Time, object: &Object) -> Vec<u8> {
    let mut out = vec![HINT_FORMAT_VERSION];
    out.extend_from_slice(&stored_at.as_micros().to_be_bytes());
    object.encode_into(&mut out);
    out
}

/// A stored hint's value: when it was stored, and its object.
pub fn decode_hint(bytes: &[u8]) -> Result<(Time, Object), StorageFailure> {
    let corrupt = |detail: String| StorageFailure::Corrupt {
        what: "hint",
        detail,
    };
    let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty".into()))?;
    if version != HINT_FORMAT_VERSION {
        return Err(corrupt(format!("unknown hint format {version}")));
    }
    let (at, obj) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("truncated".into()))?;
    let object = Object::decode(obj).map_err(|e| corrupt(e.to_string()))?;
    Ok((Time::from_micros(u64::from_be_bytes(*at)), object))
}

/// When a hint removal keeps the hint instead: removals are conditional on what was
/// listed or delivered, so that a hint stored for the key in between is never removed.
pub(super) enum Keep<'a> {
    /// A delivered hint: kept unless the delivered object includes all it holds now.
    UnlessIncludedIn(&'a Object),
    /// An expired or corrupt hint: kept unless its stored bytes still have this digest.
    UnlessDigest(u64),
}

impl<S: Storage> Executor<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &[u8],
        object: &Object,
        now: Time,
        max_hints: u64,
        max_bytes: u64,
        ttl: Duration,
    ) -> StorageResult {
        if HintRecord::content_expired(object, now, now, ttl) {
            return Ok(StorageReply::HintRejected(HintRejection::Expired));
        }
        let _guard = self.locks.lock(partition, key);
        let hk = hint_key(target, partition, key);
        let existing = self
            .storage
            .get(Space::Hints, &hk)
            .map_err(engine_failure)?;
        let old_len = existing.as_ref().map(|b| b.len() as u64);
        let (stored_at, mut merged) = match existing {
            Some(b) => match decode_hint(&b) {
                Ok((at, old)) if HintRecord::content_expired(&old, at, now, ttl) => {
                    // Replaced, not merged into: merging would carry the expired values
                    // on under the new one's age, past the point where their tombstone
                    // may be reaped.
                    metrics::counter!(shoal_proto::metrics::HINTS_TOTAL, "event" => "expired")
                        .increment(1);
                    (now, Object::new())
                }
                Ok(h) => h,
                // A corrupt hint is replaced: what it held is also on other replicas.
                Err(_) => (now, Object::new()),
            },
            None => (now, Object::new()),
        };
        merged.merge(object);
        let bytes = encode_hint(stored_at, &merged);
        let new_len = bytes.len() as u64;
        {
            let totals = self.hints.lock().unwrap_or_else(|e| e.into_inner());
            let t = totals.get(target).copied().unwrap_or_default();
            if old_len.is_none() && t.count >= max_hints {
                return Ok(StorageReply::HintRejected(HintRejection::TooMany));
            }
            if t.bytes - old_len.unwrap_or(0).min(t.bytes) + new_len > max_bytes {
                return Ok(StorageReply::HintRejected(HintRejection::TooLarge));
            }
        }
        self.storage
            .put(Space::Hints, &hk, &bytes)
            .map_err(engine_failure)?;
        let mut totals = self.hints.lock().unwrap_or_else(|e| e.into_inner());
        let t = totals.entry(target.clone()).or_default();
        match old_len {
            Some(old) => t.bytes = t.bytes.saturating_sub(old) + new_len,
            None => {
                t.count += 1;
                t.bytes += new_len;
            }
        }
        Ok(StorageReply::HintStored)
    }

    /// The hint of a key, unless it is expired at `now`.
    pub(super) fn read_hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &[u8],
        now: Time,
        ttl: Duration,
    ) -> StorageResult {
        let raw = self
            .storage
            .get(Space::Hints, &hint_key(target, partition, key))
            .map_err(engine_failure)?;
        let live = match raw {
            Some(b) => {
                let (at, object) = decode_hint(&b)?;
                (!HintRecord::content_expired(&object, at, now, ttl)).then_some(object)
            }
            None => None,
        };
        Ok(StorageReply::Object(live))
    }

    pub(super) fn list_hints(
        &self,
        target: &NodeId,
        limit: usize,
        after: Option<&(PartitionId, Vec<u8>)>,
    ) -> StorageResult {
        let prefix = hint_prefix(target);
        let end = prefix_end(&prefix);
        let start = match after {
            Some((p, k)) => {
                let mut s = hint_key(target, *p, k);
                s.push(0);
                s
            }
            None => prefix,
        };
        let rows = self
            .storage
            .scan(Space::Hints, &start, end.as_deref(), limit)
            .map_err(engine_failure)?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let Some((_, partition, key)) = split_hint_key(&k) else {
                continue;
            };
            match decode_hint(&v) {
                Ok((stored_at, object)) => out.push(HintRecord {
                    partition,
                    key: key.to_vec(),
                    object,
                    stored_at,
                    digest: raw_digest(&v),
                }),
                Err(_) => {
                    // Undecodable: drop it (if it is still these bytes) so that it cannot
                    // block delivery forever.
                    metrics::counter!(shoal_proto::metrics::HINTS_TOTAL, "event" => "corrupt")
                        .increment(1);
                    let key = key.to_vec();
                    self.delete_hint(target, partition, &key, Keep::UnlessDigest(raw_digest(&v)))?;
                }
            }
        }
        Ok(StorageReply::Hints(out))
    }

    pub(super) fn delete_hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &[u8],
        keep: Keep<'_>,
    ) -> StorageResult {
        let _guard = self.locks.lock(partition, key);
        let hk = hint_key(target, partition, key);
        let Some(bytes) = self
            .storage
            .get(Space::Hints, &hk)
            .map_err(engine_failure)?
        else {
            return Ok(StorageReply::HintDeleted(false));
        };
        let still_listed = match keep {
            // The hint grew (or was replaced) after it was read: keep it for next round.
            Keep::UnlessIncludedIn(delivered) => match decode_hint(&bytes) {
                Ok((_, stored)) => delivered.includes(&stored),
                Err(_) => true,
            },
            Keep::UnlessDigest(digest) => raw_digest(&bytes) == digest,
        };
        if !still_listed {
            return Ok(StorageReply::HintDeleted(false));
        }
        let mut batch = WriteBatch::with_capacity(1);
        batch.delete(Space::Hints, hk);
        self.storage.write(batch).map_err(engine_failure)?;
        let mut totals = self.hints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = totals.get_mut(target) {
            t.count = t.count.saturating_sub(1);
            t.bytes = t.bytes.saturating_sub(bytes.len() as u64);
            if t.count == 0 {
                totals.remove(target);
            }
        }
        Ok(StorageReply::HintDeleted(true))
    }
}
