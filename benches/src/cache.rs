//! The contexts this run has seen, per key, so that updates replace values instead of
//! piling up siblings.
//!
//! A put without a context is concurrent with everything and adds a sibling; a workload of
//! blind updates would grow every hot key without bound (until the cluster refuses it as
//! too large). Real applications write with the context of what they read or wrote, so the
//! benchmark does too: it keeps, for each key, the union of every context a read or write
//! of it returned. An update with that context replaces everything this run has seen of the
//! key; only updates racing each other leave siblings, and the next update resolves them.

use std::collections::HashMap;
use std::sync::Mutex;

use shoal_client::Context;
use shoal_proto::CausalContext;

/// Most keys whose context is kept (about a few hundred bytes each); keys beyond it are
/// updated without a context until a read of theirs finds room.
pub const MAX_CACHED_CONTEXTS: usize = 1 << 20;
/// Independent locks, so that workers rarely wait for each other.
const SHARDS: usize = 64;

/// Key number → the union of the contexts seen for it, bounded in size.
#[derive(Debug)]
pub struct ContextCache {
    shards: Vec<Mutex<HashMap<u64, Context>>>,
    per_shard: usize,
}

impl ContextCache {
    /// A cache of at most `capacity` keys (rounded up to a multiple of the shard count).
    pub fn new(capacity: usize) -> ContextCache {
        ContextCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Context>> {
        // The shard count is a constant power of two, so this index is always in range.
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The context to write `key` with, if this run has seen the key.
    pub fn get(&self, key: u64) -> Option<Context> {
        self.shard(key).get(&key).cloned()
    }

    /// Adds what a read or write of `key` returned to its context (if there is room).
    pub fn observe(&self, key: u64, ctx: &Context) {
        let mut shard = self.shard(key);
        if let Some(known) = shard.get_mut(&key) {
            known.merge(ctx);
        } else if shard.len() < self.per_shard {
            shard.insert(key, ctx.clone());
        }
    }

    /// Takes in what a write of `key` with context `sent` returned. The write superseded
    /// every value `sent` covered, so those dots are dropped from the key's context
    /// (the write's own reply keeps what the coordinator still needs); dots that other
    /// writes returned meanwhile stay. Without this, a key whose siblings nothing covers
    /// would collect one dot per write in its context, forever.
    pub fn observe_write(&self, key: u64, sent: Option<&Context>, reply: &Context) {
        let mut shard = self.shard(key);
        if let Some(known) = shard.get_mut(&key) {
            let mut next = reply.clone();
            let known_causal = known.as_causal();
            // The vector part is bounded by the number of actors: keep it whole.
            let mut rest = CausalContext::from_vv(known_causal.vv().clone());
            for &dot in known_causal.cloud() {
                if !sent.is_some_and(|s| s.as_causal().covers(dot)) {
                    rest.insert(dot);
                }
            }
            next.merge(&Context::from(rest));
            *known = next;
        } else if shard.len() < self.per_shard {
            shard.insert(key, reply.clone());
        }
    }

    /// Keys currently cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Actor, CausalContext, Dot, REPLACED_DOTS_KEPT};

    fn ctx(dots: &[(u64, u64)]) -> Context {
        let mut c = CausalContext::new();
        for &(actor, counter) in dots {
            c.insert(Dot::new(Actor(actor), counter));
        }
        Context::from(c)
    }

    #[test]
    fn contexts_of_one_key_are_merged_so_the_next_write_covers_both() {
        let cache = ContextCache::new(100);
        cache.observe(7, &ctx(&[(1, 1)]));
        cache.observe(7, &ctx(&[(2, 1)]));
        let known = cache.get(7).unwrap();
        assert!(known.as_causal().covers(Dot::new(Actor(1), 1)));
        assert!(known.as_causal().covers(Dot::new(Actor(2), 1)));
        assert_eq!(cache.get(8), None);
    }

    #[test]
    fn a_write_drops_the_dots_its_context_covered_and_keeps_concurrent_ones() {
        let cache = ContextCache::new(100);
        cache.observe(7, &ctx(&[(1, 5)]));
        let sent = cache.get(7).unwrap();
        // Another worker's write of the key returned meanwhile.
        cache.observe(7, &ctx(&[(2, 9)]));
        // This write superseded (1, 5): its reply names its own dot only.
        cache.observe_write(7, Some(&sent), &ctx(&[(1, 8)]));
        let known = cache.get(7).unwrap();
        let known = known.as_causal();
        assert!(!known.covers(Dot::new(Actor(1), 5)), "{known:?}");
        assert!(known.covers(Dot::new(Actor(1), 8)), "{known:?}");
        assert!(known.covers(Dot::new(Actor(2), 9)), "{known:?}");
    }

    #[test]
    fn writes_whose_replies_never_compact_keep_the_context_bounded() {
        // Each reply carries one dot of a node-wide counter (never contiguous for one
        // key), as when a sibling nothing covers stops the coordinator from raising its
        // entry: the plain union would grow by one dot per write.
        let cache = ContextCache::new(100);
        for i in 0..1_000u64 {
            let sent = cache.get(7);
            // The coordinator's reply: the sent context without its own older dots, plus
            // the new dot.
            let dot = Dot::new(Actor(1 + i % 3), 10 + 7 * i);
            let mut reply = sent.clone().map(Context::into_causal).unwrap_or_default();
            reply.forget_cloud_below(dot.actor, dot.counter, REPLACED_DOTS_KEPT);
            reply.insert(dot);
            cache.observe_write(7, sent.as_ref(), &Context::from(reply));
            let known = cache.get(7).unwrap();
            let bound = 3 * (1 + REPLACED_DOTS_KEPT);
            assert!(known.as_causal().cloud().len() <= bound, "{known:?}");
        }
    }

    #[test]
    fn the_cache_stops_taking_new_keys_at_its_bound() {
        let cache = ContextCache::new(SHARDS);
        for key in 0..(SHARDS as u64 * 3) {
            cache.observe(key, &ctx(&[(1, key + 1)]));
        }
        assert_eq!(cache.len(), SHARDS);
        // Known keys are still updated.
        cache.observe(0, &ctx(&[(3, 1)]));
        assert!(cache
            .get(0)
            .unwrap()
            .as_causal()
            .covers(Dot::new(Actor(3), 1)));
        assert_eq!(cache.get(SHARDS as u64), None);
    }
}
