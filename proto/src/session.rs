//! Session guarantees (read-your-writes and monotonic reads), sans IO.
//!
//! A session remembers, per key, the causal context it must see: the merge of the
//! contexts its acknowledged writes returned and of the contexts of the reads it accepted.
//! A read's reply carries the merged clock of the copies it read; the session accepts it
//! only if that clock [includes](CausalContext::includes) the remembered context
//! ([`SessionState::check`]). Then every value the session wrote (or saw) is in the reply,
//! or was replaced by a write that is: the copy holding the later write's dot has the
//! earlier dot in its clock and drops the earlier sibling when merged. This is the
//! whole decision; the SDK's `Session` and the simulator's session clients both use it.
//!
//! When a reply does not cover it, the read is asked again of more replicas
//! ([`Escalation`]: the caller's R, then R + 1, ... up to N). Under a sloppy quorum even
//! R = N may not cover it: a write acknowledged by a fallback (a hint) is on no primary
//! until the hint is delivered, and a read asks the primaries (a down primary's first
//! healthy fallback stands in, which need not be the fallback holding the hint). The
//! session then fails with a typed error instead of returning older data.
//!
//! Memory is bounded: at most `max_keys` keys are remembered; the least recently used one
//! is forgotten to make room ([`SessionState::evicted`] counts them). A forgotten key
//! loses the guarantee (its next read is accepted whatever it returns, and is then
//! remembered again). No cross-key fallback is kept: contexts of different keys do not
//! compare (a key's clock never holds another key's dots), so a merged "global" context
//! would refuse every read instead of protecting one.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use crate::causality::CausalContext;

/// Keys a session remembers by default.
pub const DEFAULT_SESSION_KEYS: usize = 10_000;

/// Whether a read's reply covers what the session has written and read of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// It does (or the session remembers nothing of the key): the read may be answered.
    Covered,
    /// It misses some write the session made or saw: ask more replicas, or fail.
    NeedMore,
}

/// What one session must see, per key, with a least-recently-used bound.
#[derive(Clone, Debug)]
pub struct SessionState {
    max_keys: NonZeroUsize,
    keys: BTreeMap<Vec<u8>, Entry>,
    /// Keys by last use (the use counter is unique per use).
    by_use: BTreeMap<u64, Vec<u8>>,
    uses: u64,
    evicted: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    context: CausalContext,
    used: u64,
}

impl Default for SessionState {
    fn default() -> SessionState {
        SessionState::new(NonZeroUsize::new(DEFAULT_SESSION_KEYS).expect("non-zero"))
    }
}

impl SessionState {
    /// A session that remembers at most `max_keys` keys.
    pub fn new(max_keys: NonZeroUsize) -> SessionState {
        SessionState {
            max_keys,
            keys: BTreeMap::new(),
            by_use: BTreeMap::new(),
            uses: 0,
            evicted: 0,
        }
    }

    /// The context a read of `key` must include, if the session remembers the key.
    pub fn required(&self, key: &[u8]) -> Option<&CausalContext> {
        self.keys.get(key).map(|e| &e.context)
    }

    /// Whether a read of `key` that returned `reply` (its context) may be answered.
    pub fn check(&self, key: &[u8], reply: &CausalContext) -> Coverage {
        match self.required(key) {
            Some(need) if !reply.includes(need) => Coverage::NeedMore,
            _ => Coverage::Covered,
        }
    }

    /// An acknowledged write of `key` returned `context`: later reads must include it.
    /// Returns how many keys were forgotten to make room (0 or 1).
    pub fn record_write(&mut self, key: &[u8], context: &CausalContext) -> usize {
        self.record(key, context)
    }

    /// A read of `key` was answered with `context` (after [`check`](Self::check) said
    /// [`Coverage::Covered`]): later reads must not go back before it. Returns how many
    /// keys were forgotten to make room (0 or 1).
    pub fn record_read(&mut self, key: &[u8], context: &CausalContext) -> usize {
        self.record(key, context)
    }

    /// Forgets `key` (for example after its tombstone was reaped: the cluster no longer
    /// holds the delete's dot, so no read could cover it again).
    pub fn forget(&mut self, key: &[u8]) {
        if let Some(e) = self.keys.remove(key) {
            self.by_use.remove(&e.used);
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys forgotten so far to stay within the bound (each lost the guarantee).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn record(&mut self, key: &[u8], context: &CausalContext) -> usize {
        self.uses += 1;
        let used = self.uses;
        if let Some(e) = self.keys.get_mut(key) {
            e.context.merge(context);
            self.by_use.remove(&e.used);
            e.used = used;
            self.by_use.insert(used, key.to_vec());
            return 0;
        }
        let mut evicted = 0;
        while self.keys.len() >= self.max_keys.get() {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.keys.remove(&oldest);
            self.evicted += 1;
            evicted += 1;
        }
        self.keys.insert(
            key.to_vec(),
            Entry {
                context: context.clone(),
                used,
            },
        );
        self.by_use.insert(used, key.to_vec());
        evicted
    }
}

/// The read quorums a session read tries, in order: the caller's R, then one more
/// replica at a time up to N. Each step is one read; at most N of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalation {
    next: u8,
    n: u8,
}

impl Escalation {
    /// The schedule from `r` (clamped to `1..=n`) to `n`.
    pub fn new(r: u8, n: u8) -> Escalation {
        Escalation {
            next: r.clamp(1, n.max(1)),
            n,
        }
    }
}

impl Iterator for Escalation {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.next == 0 || self.next > self.n {
            return None;
        }
        let r = self.next;
        self.next = if r == self.n { 0 } else { r + 1 };
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::{Actor, Dot};

    fn ctx(dots: &[(u64, u64)]) -> CausalContext {
        let mut c = CausalContext::new();
        for &(a, n) in dots {
            c.insert(Dot::new(Actor(a), n));
        }
        c
    }

    #[test]
    fn a_reply_must_include_every_write_and_read_the_session_recorded() {
        let mut s = SessionState::default();
        assert_eq!(s.check(b"k", &CausalContext::new()), Coverage::Covered);
        s.record_write(b"k", &ctx(&[(1, 1)]));
        assert_eq!(s.check(b"k", &CausalContext::new()), Coverage::NeedMore);
        assert_eq!(s.check(b"k", &ctx(&[(1, 1)])), Coverage::Covered);
        // A newer write by someone else also covers it.
        assert_eq!(s.check(b"k", &ctx(&[(1, 1), (1, 2)])), Coverage::Covered);
        // Monotonic reads: a read that saw actor 2's write raises the bar.
        s.record_read(b"k", &ctx(&[(1, 1), (2, 1)]));
        assert_eq!(s.check(b"k", &ctx(&[(1, 1)])), Coverage::NeedMore);
        assert_eq!(s.check(b"k", &ctx(&[(1, 1), (2, 1)])), Coverage::Covered);
        // A hole in the cloud is not covered.
        s.record_write(b"k", &ctx(&[(3, 5)]));
        assert_eq!(
            s.check(b"k", &ctx(&[(1, 1), (2, 1), (3, 4)])),
            Coverage::NeedMore
        );
        // Other keys are unaffected.
        assert_eq!(s.check(b"other", &CausalContext::new()), Coverage::Covered);
        s.forget(b"k");
        assert_eq!(s.check(b"k", &CausalContext::new()), Coverage::Covered);
        assert!(s.is_empty());
    }

    #[test]
    fn the_least_recently_used_key_is_forgotten_at_the_bound() {
        let mut s = SessionState::new(NonZeroUsize::new(2).unwrap());
        assert_eq!(s.record_write(b"a", &ctx(&[(1, 1)])), 0);
        assert_eq!(s.record_write(b"b", &ctx(&[(1, 2)])), 0);
        // Touch a, so b is the oldest.
        assert_eq!(s.record_read(b"a", &ctx(&[(1, 1)])), 0);
        assert_eq!(s.record_write(b"c", &ctx(&[(1, 3)])), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.evicted(), 1);
        assert!(s.required(b"b").is_none(), "b was the least recently used");
        assert!(s.required(b"a").is_some() && s.required(b"c").is_some());
        // An evicted key has lost its guarantee: any reply is accepted.
        assert_eq!(s.check(b"b", &CausalContext::new()), Coverage::Covered);
    }

    #[test]
    fn escalation_goes_from_r_to_n_one_replica_at_a_time() {
        assert_eq!(Escalation::new(1, 3).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(Escalation::new(2, 3).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(Escalation::new(3, 3).collect::<Vec<_>>(), vec![3]);
        assert_eq!(Escalation::new(0, 3).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(Escalation::new(9, 3).collect::<Vec<_>>(), vec![3]);
        assert_eq!(Escalation::new(255, 255).count(), 1);
        assert_eq!(Escalation::new(1, 255).count(), 255);
    }
}
