//! Planning operations (kind, key, value) from a seeded RNG, and carrying them out through
//! the SDK.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use shoal_client::{Client, ClientError};

use crate::args::{BenchConfig, ValueSize};
use crate::cache::{ContextCache, MAX_CACHED_CONTEXTS};
use crate::keys::{InsertSequence, KeyChooser};
use crate::stats::{Outcome, Recorder};
use crate::workload::{OpKind, OpMix};

/// Extra random bytes in the value pool, so that values start at different offsets.
const POOL_SLACK: usize = 4096;

/// Random bytes that values are cut from (copying is far cheaper than generating).
#[derive(Debug)]
pub struct ValuePool {
    bytes: Vec<u8>,
}

impl ValuePool {
    /// A pool for values up to `max_len` bytes, filled from `seed`.
    pub fn new(max_len: usize, seed: u64) -> ValuePool {
        let mut bytes = vec![0u8; max_len + POOL_SLACK];
        StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        ValuePool { bytes }
    }

    /// `len` bytes starting at `offset` (both clamped to the pool).
    pub fn value(&self, len: usize, offset: usize) -> Vec<u8> {
        let len = len.min(self.bytes.len());
        let offset = offset.min(self.bytes.len() - len);
        self.bytes[offset..offset + len].to_vec()
    }
}

/// One operation to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedOp {
    /// What to do.
    pub kind: OpKind,
    /// The key number.
    pub key: u64,
    /// Size of the value to write (unused by reads).
    pub value_len: usize,
    /// Where in the value pool the value starts.
    pub value_offset: usize,
}

/// Draws operations for one worker (or the open-loop dispatcher) from its own RNG.
#[derive(Debug)]
pub struct Planner {
    rng: StdRng,
    chooser: KeyChooser,
    mix: OpMix,
    value_size: ValueSize,
}

impl Planner {
    /// A planner seeded with `seed`, drawing keys with `chooser`.
    pub fn new(seed: u64, mix: OpMix, chooser: KeyChooser, value_size: ValueSize) -> Planner {
        Planner {
            rng: StdRng::seed_from_u64(seed),
            chooser,
            mix,
            value_size,
        }
    }

    /// The next operation. An insert reserves its key number from `inserts`; the key must
    /// be acknowledged there once the insert is done (or abandoned).
    pub fn next(&mut self, inserts: &InsertSequence) -> PlannedOp {
        let kind = self.mix.choose(self.rng.random());
        let key = match kind {
            OpKind::Insert => inserts.reserve(),
            _ => self.chooser.next(&mut self.rng, inserts.limit()),
        };
        let (value_len, value_offset) = self.value();
        PlannedOp {
            kind,
            key,
            value_len,
            value_offset,
        }
    }

    /// The size and pool offset of the next value written.
    pub fn value(&mut self) -> (usize, usize) {
        (
            self.value_size.sample(&mut self.rng),
            self.rng.random_range(0..=POOL_SLACK),
        )
    }
}

/// What every worker shares: the client, the configuration and the recorder.
#[derive(Debug)]
pub struct Shared {
    /// The SDK connection.
    pub client: Client,
    /// The run's settings.
    pub config: BenchConfig,
    /// Results of the measurement.
    pub recorder: Mutex<Recorder>,
    /// Key numbers of inserts, and the limit reads may pick below.
    pub inserts: InsertSequence,
    /// The latest context seen per key.
    pub contexts: ContextCache,
    /// Updates that read their key first, as this run had no context for it (warm-up
    /// included).
    pub context_reads: AtomicU64,
    /// Bytes values are cut from.
    pub values: ValuePool,
}

impl Shared {
    /// Everything a run needs; the recorder's measurement starts at `origin` (it is replaced
    /// with the real start before the run).
    pub fn new(client: Client, config: BenchConfig, origin: Instant) -> Arc<Shared> {
        Arc::new(Shared {
            client,
            inserts: InsertSequence::new(config.keys),
            contexts: ContextCache::new(MAX_CACHED_CONTEXTS),
            context_reads: AtomicU64::new(0),
            values: ValuePool::new(config.value_size.max(), config.seed),
            recorder: Mutex::new(Recorder::new(origin)),
            config,
        })
    }

    /// A planner for worker `worker`, its seed derived from the run's seed.
    pub fn planner(&self, worker: u64) -> Planner {
        let seed = self
            .config
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(worker.wrapping_add(1));
        Planner::new(
            seed,
            self.config.workload.mix(),
            KeyChooser::new(self.config.distribution, self.config.keys),
            self.config.value_size,
        )
    }

    /// Locks the recorder (a panic elsewhere does not stop the others from recording).
    pub fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of an operation.
    pub fn record(&self, kind: OpKind, intended: Instant, done: Instant, outcome: Outcome) {
        self.recorder().record(kind, intended, done, outcome);
    }

    /// Gives up on a planned operation that will not be sent.
    pub fn abandon(&self, op: &PlannedOp) {
        if op.kind == OpKind::Insert {
            self.inserts.acknowledge(op.key);
        }
    }

    /// Before an update of a key this run has no context for (its first in this run):
    /// reads the key's context, as an application that keeps contexts does, so that the
    /// update replaces the value instead of adding a sibling no later write would know
    /// of (a workload without reads would never replace it). Not part of the update: in
    /// closed loop its time is not in the update's latency; the load it adds is, and
    /// the summary counts these reads. A failed read leaves the update without context.
    pub async fn prepare(&self, op: &PlannedOp) {
        if op.kind != OpKind::Update || self.contexts.get(op.key).is_some() {
            return;
        }
        self.context_reads.fetch_add(1, Ordering::Relaxed);
        let key = self.config.key(op.key);
        if let Ok(read) = self
            .client
            .get_with(&key)
            .options(self.config.read)
            .send()
            .await
        {
            if !read.context.is_empty() {
                self.contexts.observe(op.key, &read.context);
            }
        }
    }

    /// Carries out `op` and says how it ended.
    pub async fn execute(&self, op: &PlannedOp) -> Outcome {
        let result = self.try_execute(op).await;
        if op.kind == OpKind::Insert {
            self.inserts.acknowledge(op.key);
        }
        match result {
            Ok(found) => Outcome::Ok { found },
            Err(e) => Outcome::Err(e.label()),
        }
    }

    async fn try_execute(&self, op: &PlannedOp) -> Result<Option<bool>, ClientError> {
        let cfg = &self.config;
        let key = cfg.key(op.key);
        let value = || self.values.value(op.value_len, op.value_offset);
        match op.kind {
            OpKind::Read => {
                let read = self.client.get_with(&key).options(cfg.read).send().await?;
                if !read.context.is_empty() {
                    self.contexts.observe(op.key, &read.context);
                }
                Ok(Some(read.found))
            }
            OpKind::Update => {
                let known = self.contexts.get(op.key);
                let ctx = self
                    .client
                    .put_with(&key, value())
                    .context(known.as_ref())
                    .options(cfg.write)
                    .send()
                    .await?;
                self.contexts.observe_write(op.key, known.as_ref(), &ctx);
                Ok(None)
            }
            OpKind::Insert => {
                let ctx = self
                    .client
                    .put_with(&key, value())
                    .options(cfg.write)
                    .send()
                    .await?;
                self.contexts.observe(op.key, &ctx);
                Ok(None)
            }
            OpKind::Rmw => {
                let read = self.client.get_with(&key).options(cfg.read).send().await?;
                let ctx = self
                    .client
                    .put_with(&key, value())
                    .context(&read.context)
                    .options(cfg.write)
                    .send()
                    .await?;
                self.contexts
                    .observe_write(op.key, Some(&read.context), &ctx);
                Ok(Some(read.found))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Distribution;
    use crate::workload::Workload;

    #[test]
    fn values_are_cut_from_the_pool_at_the_requested_size() {
        let pool = ValuePool::new(100, 3);
        assert_eq!(pool.value(100, POOL_SLACK).len(), 100);
        assert_eq!(pool.value(10, 0), pool.value(10, 0));
        assert_ne!(pool.value(16, 0), pool.value(16, 1));
        assert_eq!(pool.value(1 << 30, 0).len(), 100 + POOL_SLACK, "clamped");
    }

    #[test]
    fn planners_with_the_same_seed_plan_the_same_operations() {
        let plan = |seed| {
            let inserts = InsertSequence::new(1000);
            let mut p = Planner::new(
                seed,
                Workload::D.mix(),
                KeyChooser::new(Distribution::Latest, 1000),
                ValueSize::Range { min: 1, max: 50 },
            );
            (0..200).map(|_| p.next(&inserts)).collect::<Vec<_>>()
        };
        assert_eq!(plan(1), plan(1));
        assert_ne!(plan(1), plan(2));
    }

    #[test]
    fn inserts_take_fresh_keys_and_reads_stay_below_the_acknowledged_limit() {
        let inserts = InsertSequence::new(100);
        let mut p = Planner::new(
            5,
            Workload::D.mix(),
            KeyChooser::new(Distribution::Latest, 100),
            ValueSize::Fixed(8),
        );
        let mut inserted = Vec::new();
        for _ in 0..2000 {
            let op = p.next(&inserts);
            match op.kind {
                OpKind::Insert => inserted.push(op.key),
                _ => assert!(op.key < inserts.limit(), "{op:?}"),
            }
            assert_eq!(op.value_len, 8);
        }
        assert!(!inserted.is_empty());
        let expected: Vec<u64> = (100..100 + inserted.len() as u64).collect();
        assert_eq!(inserted, expected, "insert keys are handed out in order");
        assert_eq!(inserts.limit(), 100, "nothing acknowledged yet");
    }
}
