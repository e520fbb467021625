//! The data set: keys, values and objects, loading them into every replica, making some
//! keys differ between replicas, and the full-scan baseline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use shoal_executor::{raw_digest, Executor};
use shoal_proto::{Actor, CausalContext, Dot, Object, SiblingValue, StorageOp, StorageReply, Time};
use shoal_ring::{PartitionId, Ring};
use shoal_storage::{RocksStorage, Storage};

use crate::cluster::Cluster;

/// Objects per `MergeMany` when loading.
const LOAD_BATCH: usize = 512;
/// Rows per page of the full scan (the executor's own scan page).
const SCAN_PAGE: usize = 4096;
/// Bytes the executor puts in front of each stored key (its Merkle segment, big-endian;
/// see the key layout in docs/ARCHITECTURE.md). The full scan subtracts them so that it
/// counts the user key, as a (key, digest) list on the wire would.
const SEGMENT_PREFIX_BYTES: usize = 2;
/// The actor of the loader that wrote the base objects (not a node's actor).
const LOADER_ACTOR: Actor = Actor(0x10AD);
/// Largest object either replica accepts (the engine default).
const MAX_OBJECT_BYTES: usize = 16 << 20;
/// Length of every key: `user` and 12 digits.
pub const KEY_BYTES: usize = 16;

/// Key number `i` (fixed length, [`KEY_BYTES`]).
pub fn key(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

/// `len` pseudo-random bytes decided by `seed` (splitmix64): incompressible, like
/// real payloads, and cheap enough to make a million of.
pub fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The base object of key `i`: one sibling written by the loader. Every replica gets
/// the same bytes.
pub fn base_object(i: u64, value_bytes: usize, seed: u64, at: Time) -> anyhow::Result<Object> {
    let mut object = Object::new();
    object
        .update(
            &CausalContext::new(),
            SiblingValue::Data(value(
                seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D),
                value_bytes,
            )),
            Dot::new(LOADER_ACTOR, i + 1),
            at,
        )
        .context("build a base object")?;
    Ok(object)
}

/// Load keys `0..keys` into one replica, `LOAD_BATCH` objects per `MergeMany`.
fn load_replica(
    executor: &Executor<RocksStorage>,
    ring: &Ring,
    keys: u64,
    value_bytes: usize,
    seed: u64,
    at: Time,
    progress: Option<&dyn Fn(u64)>,
) -> anyhow::Result<()> {
    let mut pending: BTreeMap<PartitionId, Vec<(Vec<u8>, Object)>> = BTreeMap::new();
    let flush = |partition: PartitionId, objects: Vec<(Vec<u8>, Object)>| -> anyhow::Result<()> {
        let count = objects.len() as u64;
        match executor.execute(StorageOp::MergeMany {
            partition,
            objects,
            max_object_bytes: MAX_OBJECT_BYTES,
        })? {
            StorageReply::MergedMany { changed, .. } if changed == count => Ok(()),
            other => bail!("loading partition {partition}: unexpected reply {other:?}"),
        }
    };
    let step = (keys / 10).max(1);
    for i in 0..keys {
        let k = key(i);
        let partition = ring.partition_of(&k);
        let batch = pending.entry(partition).or_default();
        batch.push((k, base_object(i, value_bytes, seed, at)?));
        if batch.len() >= LOAD_BATCH {
            let full = std::mem::take(batch);
            flush(partition, full)?;
        }
        if let Some(report) = progress {
            if (i + 1) % step == 0 {
                report(i + 1);
            }
        }
    }
    for (partition, batch) in pending {
        if !batch.is_empty() {
            flush(partition, batch)?;
        }
    }
    Ok(())
}

/// Load the same `keys` objects into every replica (one thread per replica), then flush
/// the memtables so that the data sits in SST files as on a node that has run a while.
pub fn load(
    cluster: &Cluster,
    keys: u64,
    value_bytes: usize,
    seed: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let ring = cluster.ring();
    let at = cluster.now();
    std::thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                s.spawn(move || {
                    let report = |done: u64| {
                        eprintln!("  loaded {done}/{keys} keys ({:.0?})", started.elapsed())
                    };
                    // Only the first replica reports progress (they go at the same pace).
                    let progress: Option<&dyn Fn(u64)> = if n == 0 { Some(&report) } else { None };
                    load_replica(&node.executor, ring, keys, value_bytes, seed, at, progress)?;
                    node.executor.storage().flush()?;
                    anyhow::Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => bail!("a loader thread panicked"),
            }
        }
        anyhow::Ok(())
    })?;
    Ok(started.elapsed())
}

/// How a chosen key is made to differ between replica 0 (A) and replica 1 (B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// A holds a newer version (a write B missed).
    NewerOnA,
    /// B holds a newer version.
    NewerOnB,
    /// A lost the key (B must give it back).
    MissingOnA,
    /// B lost the key.
    MissingOnB,
}

impl DiffKind {
    /// The kind of the `position`-th chosen key: the four kinds in turn.
    pub fn of(position: usize) -> DiffKind {
        match position % 4 {
            0 => DiffKind::NewerOnA,
            1 => DiffKind::NewerOnB,
            2 => DiffKind::MissingOnA,
            _ => DiffKind::MissingOnB,
        }
    }

    /// The replica the change is made on.
    fn replica(self) -> usize {
        match self {
            DiffKind::NewerOnA | DiffKind::MissingOnA => 0,
            DiffKind::NewerOnB | DiffKind::MissingOnB => 1,
        }
    }
}

/// Make `count` distinct keys (chosen by `seed`) differ, the four [`DiffKind`]s in turn,
/// by writing on one replica only. Every key count stays the same once repaired, so the
/// next case starts from `keys` identical keys again. Returns the wall time it took.
pub fn make_differences(
    cluster: &Cluster,
    keys: u64,
    count: u64,
    value_bytes: usize,
    seed: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let total = usize::try_from(keys).context("too many keys")?;
    let amount = usize::try_from(count).context("too many differences")?;
    if amount > total {
        bail!("{count} differences asked of {keys} keys");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let chosen = rand::seq::index::sample(&mut rng, total, amount);
    let now = cluster.now();
    for (position, i) in chosen.iter().enumerate() {
        let i = i as u64;
        let k = key(i);
        let partition = cluster.ring().partition_of(&k);
        let kind = DiffKind::of(position);
        let executor = &cluster.nodes[kind.replica()].executor;
        match kind {
            DiffKind::NewerOnA | DiffKind::NewerOnB => {
                let current = match executor.execute(StorageOp::Read {
                    partition,
                    key: k.clone(),
                })? {
                    StorageReply::Object(Some(o)) => o,
                    other => bail!("key {i} should be stored, read gave {other:?}"),
                };
                let new_value = value(seed ^ i.rotate_left(17), value_bytes);
                match executor.execute(StorageOp::Coordinate {
                    partition,
                    key: k,
                    context: current.context(),
                    value: SiblingValue::Data(new_value),
                    now,
                    max_object_bytes: MAX_OBJECT_BYTES,
                    max_siblings: usize::MAX,
                })? {
                    StorageReply::Coordinated { .. } => {}
                    other => bail!("writing key {i}: unexpected reply {other:?}"),
                }
            }
            DiffKind::MissingOnA | DiffKind::MissingOnB => {
                let digest = match executor.execute(StorageOp::Digests {
                    partition,
                    keys: vec![k.clone()],
                })? {
                    StorageReply::Digests(d) => match d.first() {
                        Some(Some(d)) => *d,
                        _ => bail!("key {i} should be stored"),
                    },
                    other => bail!("digest of key {i}: unexpected reply {other:?}"),
                };
                // `Reap` deletes a key whose object is still the given one: the only
                // delete the executor offers, and exactly a lost key.
                match executor.execute(StorageOp::Reap {
                    partition,
                    keys: vec![(k, digest)],
                })? {
                    StorageReply::Reaped(1) => {}
                    other => bail!("deleting key {i}: unexpected reply {other:?}"),
                }
            }
        }
    }
    Ok(started.elapsed())
}

/// What the scan-based comparison costs: read every object of a replica and digest it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanCost {
    /// Objects scanned.
    pub keys: u64,
    /// Bytes of the (key, digest) list one replica would send: key lengths + 8 each.
    pub list_bytes: u64,
    /// Wall time of the scan and the digests.
    pub elapsed: Duration,
}

/// The bytes a (key, digest) pair takes in a scan-based comparison's list.
pub fn pair_bytes(key_len: usize) -> u64 {
    key_len as u64 + 8
}

/// Scan every partition of `storage` page by page and xxh3 every object (the same
/// digest anti-entropy uses).
pub fn full_scan(storage: &RocksStorage, ring: &Ring) -> anyhow::Result<ScanCost> {
    let started = Instant::now();
    let mut cost = ScanCost::default();
    let mut fold = 0u64;
    for p in ring.partitions() {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = storage.scan_partition(p, after.as_deref(), SCAN_PAGE)?;
            let full = rows.len() == SCAN_PAGE;
            for (stored, object) in &rows {
                fold ^= raw_digest(object);
                cost.keys += 1;
                cost.list_bytes += pair_bytes(stored.len().saturating_sub(SEGMENT_PREFIX_BYTES));
            }
            match rows.into_iter().last() {
                Some((k, _)) if full => after = Some(k),
                _ => break,
            }
        }
    }
    cost.elapsed = started.elapsed();
    // Keep the digests observable so that the work cannot be optimised away.
    std::hint::black_box(fold);
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_fixed_length_and_are_distinct() {
        assert_eq!(key(0).len(), KEY_BYTES);
        assert_eq!(key(999_999_999_999).len(), KEY_BYTES);
        assert_ne!(key(1), key(2));
    }

    #[test]
    fn values_are_deterministic_and_of_the_asked_length() {
        assert_eq!(value(7, 100), value(7, 100));
        assert_ne!(value(7, 100), value(8, 100));
        assert_eq!(value(7, 100).len(), 100);
        assert_eq!(value(7, 0).len(), 0);
    }

    #[test]
    fn base_objects_are_identical_for_every_replica() {
        let at = Time::from_micros(1);
        let a = base_object(5, 100, 1, at).unwrap();
        let b = base_object(5, 100, 1, at).unwrap();
        assert_eq!(a.encode(), b.encode());
        assert_ne!(a.encode(), base_object(6, 100, 1, at).unwrap().encode());
    }

    #[test]
    fn a_pair_costs_its_key_and_an_eight_byte_digest() {
        assert_eq!(pair_bytes(KEY_BYTES), 24);
        assert_eq!(pair_bytes(0), 8);
    }

    #[test]
    fn the_four_kinds_of_difference_come_in_turn() {
        let kinds: Vec<DiffKind> = (0..5).map(DiffKind::of).collect();
        assert_eq!(
            kinds,
            [
                DiffKind::NewerOnA,
                DiffKind::NewerOnB,
                DiffKind::MissingOnA,
                DiffKind::MissingOnB,
                DiffKind::NewerOnA
            ]
        );
    }
}
