//! Carries out the engine's [`StorageOp`]s against a [`Storage`] engine.
//!
//! Each op is an atomic read-modify-write of one key: the key's stripe lock is held
//! across read, object logic (always `shoal_proto`'s) and write. The executor also owns
//! the two pieces of per-node state that must survive restarts:
//!
//! - the node's [`Actor`] (its incarnation id), created at random with the data directory;
//! - the dot counter, a node-wide increasing sequence. Counter blocks are reserved in
//!   metadata before use (hi-lo), so a restart never reuses a counter: at most the rest
//!   of one block is skipped.
//!
//! Hints live in the hints space under `len(target) ‖ target ‖ be32(partition) ‖ key`, so
//! one target's hints are one range; their totals per target are kept in memory (rebuilt
//! by a scan at open) to enforce the per-target bounds.

use std::collections::BTreeMap;
use std::sync::Mutex;

use shoal_proto::{
    Actor, CausalContext, Dot, HintRecord, HintRejection, HintTotals, Object, SiblingValue,
    StorageOp, StorageReply, Time,
};
use shoal_ring::{NodeId, PartitionId};
use shoal_storage::{KeyLocks, Space, Storage, StorageError, WriteBatch};

/// Counters reserved per metadata write.
const DOT_BLOCK: u64 = 1 << 20;
/// Metadata entry: the node's actor id (u64, big-endian).
const META_ACTOR: &str = "actor";
/// Metadata entry: the highest dot counter reserved (u64, big-endian).
const META_DOT_RESERVED: &str = "dot_counter_reserved";
/// Version byte of an encoded hint.
const HINT_FORMAT_VERSION: u8 = 1;
/// Rows per page when rebuilding hint totals at open.
const SCAN_PAGE: usize = 4096;

/// Why the executor could not open or run an op.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stored bytes did not decode.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
}

struct DotCounter {
    next: u64,
    reserved: u64,
}

/// Runs storage ops for one node. Shared between the driver's storage worker threads.
pub struct Executor<S: Storage> {
    storage: S,
    locks: KeyLocks,
    actor: Actor,
    dots: Mutex<DotCounter>,
    hints: Mutex<BTreeMap<NodeId, HintTotals>>,
}

impl<S: Storage> std::fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

fn read_u64(storage: &impl Storage, name: &str) -> Result<Option<u64>, ExecError> {
    match storage.get_meta(name)? {
        None => Ok(None),
        Some(bytes) => {
            let arr: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| ExecError::Corrupt {
                    what: "metadata",
                    detail: format!("{name} is {} bytes, expected 8", bytes.len()),
                })?;
            Ok(Some(u64::from_be_bytes(arr)))
        }
    }
}

/// The hints-space key of a hint.
pub fn hint_key(target: &NodeId, partition: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut out = hint_prefix(target);
    out.extend_from_slice(&partition.0.to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn hint_prefix(target: &NodeId) -> Vec<u8> {
    let t = target.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + t.len() + 4);
    // Node ids are at most 64 bytes, so the length fits a byte.
    out.push(u8::try_from(t.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(t);
    out
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn split_hint_key(raw: &[u8]) -> Option<(NodeId, PartitionId, &[u8])> {
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
    out.extend(object.encode());
    out
}

fn decode_hint(bytes: &[u8]) -> Result<(Time, Object), ExecError> {
    let corrupt = |detail: String| ExecError::Corrupt {
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

fn decode_object(bytes: &[u8]) -> Result<Object, ExecError> {
    Object::decode(bytes).map_err(|e| ExecError::Corrupt {
        what: "object",
        detail: e.to_string(),
    })
}

impl<S: Storage> Executor<S> {
    /// Open on `storage`: load (or create, with `new_actor()`) the actor, reserve a block
    /// of dot counters, and rebuild the hint totals.
    pub fn open(storage: S, new_actor: impl FnOnce() -> u64) -> Result<Executor<S>, ExecError> {
        let actor = match read_u64(&storage, META_ACTOR)? {
            Some(a) => Actor(a),
            None => {
                let a = new_actor();
                storage.put_meta(META_ACTOR, &a.to_be_bytes())?;
                Actor(a)
            }
        };
        let reserved = read_u64(&storage, META_DOT_RESERVED)?.unwrap_or(0);
        // Counters up to `reserved` may have been used by an earlier run: start above.
        let next = reserved + 1;
        let reserved = reserved + DOT_BLOCK;
        storage.put_meta(META_DOT_RESERVED, &reserved.to_be_bytes())?;
        let exec = Executor {
            storage,
            locks: KeyLocks::default(),
            actor,
            dots: Mutex::new(DotCounter { next, reserved }),
            hints: Mutex::new(BTreeMap::new()),
        };
        exec.rebuild_hint_totals()?;
        Ok(exec)
    }

    /// This node's actor.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The storage engine.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn rebuild_hint_totals(&self) -> Result<(), ExecError> {
        let mut totals: BTreeMap<NodeId, HintTotals> = BTreeMap::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let rows = self.storage.scan(Space::Hints, &start, None, SCAN_PAGE)?;
            let full = rows.len() == SCAN_PAGE;
            for (k, v) in &rows {
                if let Some((target, _, _)) = split_hint_key(k) {
                    let t = totals.entry(target).or_default();
                    t.count += 1;
                    t.bytes += v.len() as u64;
                }
            }
            match rows.last() {
                Some((k, _)) if full => {
                    start = k.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        *self.hints.lock().unwrap_or_else(|e| e.into_inner()) = totals;
        Ok(())
    }

    fn mint(&self, at_least: u64) -> Result<Dot, ExecError> {
        let mut d = self.dots.lock().unwrap_or_else(|e| e.into_inner());
        if d.next < at_least {
            d.next = at_least;
        }
        if d.next > d.reserved {
            let reserved = d.next + DOT_BLOCK;
            self.storage
                .put_meta(META_DOT_RESERVED, &reserved.to_be_bytes())?;
            d.reserved = reserved;
        }
        let dot = Dot::new(self.actor, d.next);
        d.next += 1;
        Ok(dot)
    }

    /// Run one op. Errors are reported as text to the engine, which turns them into a
    /// typed `Storage` error for the requester.
    pub fn execute(&self, op: StorageOp) -> Result<StorageReply, ExecError> {
        match op {
            StorageOp::Read { partition, key } => {
                let obj = self
                    .storage
                    .get_object(partition, &key)?
                    .map(|b| decode_object(&b))
                    .transpose()?;
                Ok(StorageReply::Object(obj))
            }
            StorageOp::ReadHint {
                target,
                partition,
                key,
            } => {
                let raw = self
                    .storage
                    .get(Space::Hints, &hint_key(&target, partition, &key))?;
                let obj = raw.map(|b| decode_hint(&b)).transpose()?.map(|(_, o)| o);
                Ok(StorageReply::Object(obj))
            }
            StorageOp::Coordinate {
                partition,
                key,
                context,
                value,
                now,
                max_object_bytes,
            } => self.coordinate(partition, &key, &context, value, now, max_object_bytes),
            StorageOp::Merge {
                partition,
                key,
                object,
                max_object_bytes,
            } => {
                let _guard = self.locks.lock(partition, &key);
                let mut current = match self.storage.get_object(partition, &key)? {
                    Some(b) => decode_object(&b)?,
                    None => Object::new(),
                };
                let changed = current.merge(&object);
                if changed {
                    let bytes = current.encode();
                    if bytes.len() > max_object_bytes {
                        return Ok(StorageReply::TooLarge {
                            len: bytes.len(),
                            max: max_object_bytes,
                        });
                    }
                    self.storage.put_object(partition, &key, &bytes)?;
                }
                Ok(StorageReply::Merged {
                    object: current,
                    changed,
                })
            }
            StorageOp::StoreHint {
                target,
                partition,
                key,
                object,
                now,
                max_hints,
                max_bytes,
            } => self.store_hint(&target, partition, &key, &object, now, max_hints, max_bytes),
            StorageOp::ListHints { target, limit } => self.list_hints(&target, limit),
            StorageOp::DeleteHint {
                target,
                partition,
                key,
                delivered,
            } => self.delete_hint(&target, partition, &key, Some(&delivered)),
            StorageOp::DropHint {
                target,
                partition,
                key,
            } => self.delete_hint(&target, partition, &key, None),
            StorageOp::HintSummary => {
                let totals = self.hints.lock().unwrap_or_else(|e| e.into_inner());
                Ok(StorageReply::HintSummary(
                    totals
                        .iter()
                        .filter(|(_, t)| t.count > 0)
                        .map(|(id, t)| (id.clone(), *t))
                        .collect(),
                ))
            }
        }
    }

    fn coordinate(
        &self,
        partition: PartitionId,
        key: &[u8],
        context: &CausalContext,
        value: SiblingValue,
        now: Time,
        max_object_bytes: usize,
    ) -> Result<StorageReply, ExecError> {
        let _guard = self.locks.lock(partition, key);
        let mut object = match self.storage.get_object(partition, key)? {
            Some(b) => decode_object(&b)?,
            None => Object::new(),
        };
        // The counter is node-wide and only grows, so it is above anything this actor
        // minted; a context claiming more (only possible from a forged or foreign
        // context) lifts the counter above it.
        let known = object
            .clock()
            .max_counter(self.actor)
            .max(context.max_counter(self.actor));
        let dot = self.mint(known + 1)?;
        let reply = object
            .update(context, value, dot, now)
            .map_err(|e| ExecError::Corrupt {
                what: "dot counter",
                detail: e.to_string(),
            })?;
        let bytes = object.encode();
        if bytes.len() > max_object_bytes {
            return Ok(StorageReply::TooLarge {
                len: bytes.len(),
                max: max_object_bytes,
            });
        }
        self.storage.put_object(partition, key, &bytes)?;
        Ok(StorageReply::Coordinated {
            object,
            context: reply,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn store_hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &[u8],
        object: &Object,
        now: Time,
        max_hints: u64,
        max_bytes: u64,
    ) -> Result<StorageReply, ExecError> {
        let _guard = self.locks.lock(partition, key);
        let hk = hint_key(target, partition, key);
        let existing = self.storage.get(Space::Hints, &hk)?;
        let old_len = existing.as_ref().map(|b| b.len() as u64);
        let (stored_at, mut merged) = match existing {
            Some(b) => match decode_hint(&b) {
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
        self.storage.put(Space::Hints, &hk, &bytes)?;
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

    fn list_hints(&self, target: &NodeId, limit: usize) -> Result<StorageReply, ExecError> {
        let prefix = hint_prefix(target);
        let end = prefix_end(&prefix);
        let rows = self
            .storage
            .scan(Space::Hints, &prefix, end.as_deref(), limit)?;
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
                }),
                Err(_) => {
                    // Undecodable: drop it so that it cannot block delivery forever.
                    metrics::counter!("shoal_hints_total", "event" => "corrupt").increment(1);
                    let key = key.to_vec();
                    self.delete_hint(target, partition, &key, None)?;
                }
            }
        }
        Ok(StorageReply::Hints(out))
    }

    fn delete_hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &[u8],
        delivered: Option<&Object>,
    ) -> Result<StorageReply, ExecError> {
        let _guard = self.locks.lock(partition, key);
        let hk = hint_key(target, partition, key);
        let Some(bytes) = self.storage.get(Space::Hints, &hk)? else {
            return Ok(StorageReply::HintDeleted(false));
        };
        if let Some(delivered) = delivered {
            if let Ok((_, stored)) = decode_hint(&bytes) {
                if !delivered.includes(&stored) {
                    // The hint grew after it was read: keep it for the next round.
                    return Ok(StorageReply::HintDeleted(false));
                }
            }
        }
        let mut batch = WriteBatch::with_capacity(1);
        batch.delete(Space::Hints, hk);
        self.storage.write(batch)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_storage::MemStorage;

    fn exec(storage: &MemStorage) -> Executor<MemStorage> {
        Executor::open(storage.clone(), || 42).unwrap()
    }

    fn put(e: &Executor<MemStorage>, key: &[u8], v: &str, ctx: CausalContext) -> StorageReply {
        e.execute(StorageOp::Coordinate {
            partition: PartitionId(1),
            key: key.to_vec(),
            context: ctx,
            value: SiblingValue::Data(v.as_bytes().to_vec()),
            now: Time::ZERO,
            max_object_bytes: 1 << 20,
        })
        .unwrap()
    }

    #[test]
    fn actor_survives_reopen_and_dots_never_repeat() {
        let storage = MemStorage::new();
        let e = exec(&storage);
        let StorageReply::Coordinated { object, .. } = put(&e, b"k", "a", CausalContext::new())
        else {
            panic!("not coordinated")
        };
        let first = object.siblings()[0].dot;
        drop(e);
        let e = Executor::open(storage.clone(), || 7).unwrap();
        assert_eq!(e.actor(), Actor(42));
        let StorageReply::Coordinated { object, .. } = put(&e, b"other", "b", CausalContext::new())
        else {
            panic!("not coordinated")
        };
        assert!(object.siblings()[0].dot.counter > first.counter);
    }

    #[test]
    fn hints_are_bounded_per_target_and_totals_survive_reopen() {
        let storage = MemStorage::new();
        let e = exec(&storage);
        let target = NodeId::new("b").unwrap();
        let StorageReply::Coordinated { object, .. } = put(&e, b"k", "a", CausalContext::new())
        else {
            panic!()
        };
        let store = |key: &[u8]| {
            e.execute(StorageOp::StoreHint {
                target: target.clone(),
                partition: PartitionId(1),
                key: key.to_vec(),
                object: object.clone(),
                now: Time::ZERO,
                max_hints: 2,
                max_bytes: 1 << 20,
            })
            .unwrap()
        };
        assert_eq!(store(b"k1"), StorageReply::HintStored);
        assert_eq!(store(b"k2"), StorageReply::HintStored);
        // Updating an existing hint is not a new hint.
        assert_eq!(store(b"k1"), StorageReply::HintStored);
        assert_eq!(
            store(b"k3"),
            StorageReply::HintRejected(HintRejection::TooMany)
        );
        drop(e);
        let e = exec(&storage);
        let StorageReply::HintSummary(s) = e.execute(StorageOp::HintSummary).unwrap() else {
            panic!()
        };
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1.count, 2);
        let StorageReply::Hints(list) = e
            .execute(StorageOp::ListHints {
                target: target.clone(),
                limit: 10,
            })
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(list.len(), 2);
        let r = e
            .execute(StorageOp::DeleteHint {
                target: target.clone(),
                partition: PartitionId(1),
                key: b"k1".to_vec(),
                delivered: list[0].object.clone(),
            })
            .unwrap();
        assert_eq!(r, StorageReply::HintDeleted(true));
    }

    #[test]
    fn a_hint_that_grew_after_delivery_is_kept() {
        let storage = MemStorage::new();
        let e = exec(&storage);
        let target = NodeId::new("b").unwrap();
        let StorageReply::Coordinated { object: v1, .. } = put(&e, b"k", "a", CausalContext::new())
        else {
            panic!()
        };
        let StorageReply::Coordinated { object: v2, .. } = put(&e, b"k", "b", CausalContext::new())
        else {
            panic!()
        };
        for obj in [&v1, &v2] {
            e.execute(StorageOp::StoreHint {
                target: target.clone(),
                partition: PartitionId(1),
                key: b"k".to_vec(),
                object: obj.clone(),
                now: Time::ZERO,
                max_hints: 10,
                max_bytes: 1 << 20,
            })
            .unwrap();
        }
        let r = e
            .execute(StorageOp::DeleteHint {
                target,
                partition: PartitionId(1),
                key: b"k".to_vec(),
                delivered: v1,
            })
            .unwrap();
        assert_eq!(r, StorageReply::HintDeleted(false));
    }
}
