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
//! A key the session knows to hold no value (its own delete replaced everything it had
//! written and read of the key, or its last answered read found nothing) is *absent*: a
//! read that finds nothing is then answered whatever its context, as it shows what the
//! session knows (once the delete's tombstone is reaped no replica holds its dot, and
//! no read could include the context again), while a read that returns values must
//! still include the context (a lagging replica may hold a value the delete replaced).
//! The session's next write of an absent key carries the context along
//! ([`SessionState::write_context`]): it replaces only what the session deleted or saw
//! deleted, and the new value's clock then includes the context again.
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
    /// It does not, but the key is absent for the session and the read found nothing:
    /// the read may be answered (see the module's text).
    Absent,
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
    /// The session knows the key holds no value (see the module's text).
    absent: bool,
}

/// What the session learnt of a key, for [`SessionState::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Learnt {
    /// A put was acknowledged, or a read returned values.
    Value,
    /// A delete was acknowledged.
    Delete,
    /// A read found nothing.
    Nothing,
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

    /// Whether a read of `key` that returned `reply` (its context), `found` or not, may
    /// be answered: its context includes what the session remembers of the key
    /// ([`Coverage::Covered`]), or the key is absent for the session and the read found
    /// nothing ([`Coverage::Absent`]).
    pub fn check(&self, key: &[u8], reply: &CausalContext, found: bool) -> Coverage {
        match self.keys.get(key) {
            Some(e) if !reply.includes(&e.context) => {
                if e.absent && !found {
                    Coverage::Absent
                } else {
                    Coverage::NeedMore
                }
            }
            _ => Coverage::Covered,
        }
    }

    /// An acknowledged put of `key` returned `context`: later reads must include it.
    /// Returns how many keys were forgotten to make room (0 or 1).
    pub fn record_write(&mut self, key: &[u8], context: &CausalContext) -> usize {
        self.record(key, context, Learnt::Value)
    }

    /// An acknowledged delete of `key` returned `context`: later reads must include it,
    /// and the key is absent for the session if the delete replaced all the session
    /// remembered of it (its context includes that). Returns how many keys were
    /// forgotten to make room (0 or 1).
    pub fn record_delete(&mut self, key: &[u8], context: &CausalContext) -> usize {
        self.record(key, context, Learnt::Delete)
    }

    /// A read of `key` was answered with `context`, `found` or not (after
    /// [`check`](Self::check) said it may be): later reads must not go back
    /// before it. Returns how many keys were forgotten to make room (0 or 1).
    pub fn record_read(&mut self, key: &[u8], context: &CausalContext, found: bool) -> usize {
        let learnt = if found {
            Learnt::Value
        } else {
            Learnt::Nothing
        };
        self.record(key, context, learnt)
    }

    /// The context a write of `key` should carry, given the one the caller chose: for a
    /// key absent for the session, merged with what the session remembers (all of it
    /// deleted, so the write replaces nothing more than a write after reading the
    /// tombstone would, and its value's clock includes what later reads must include,
    /// even once the tombstone was reaped). `None` when the caller's stands as it is.
    pub fn write_context(
        &self,
        key: &[u8],
        given: Option<&CausalContext>,
    ) -> Option<CausalContext> {
        let e = self.keys.get(key).filter(|e| e.absent)?;
        if given.is_some_and(|g| g.includes(&e.context)) {
            return None;
        }
        let mut merged = given.cloned().unwrap_or_default();
        merged.merge(&e.context);
        Some(merged)
    }

    /// Forgets `key`: its next read is answered whatever it returns.
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

    fn record(&mut self, key: &[u8], context: &CausalContext, learnt: Learnt) -> usize {
        self.uses += 1;
        let used = self.uses;
        if let Some(e) = self.keys.get_mut(key) {
            e.absent = match learnt {
                Learnt::Value => false,
                Learnt::Delete => context.includes(&e.context),
                Learnt::Nothing => true,
            };
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
                absent: learnt != Learnt::Value,
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
        assert_eq!(
            s.check(b"k", &CausalContext::new(), true),
            Coverage::Covered
        );
        s.record_write(b"k", &ctx(&[(1, 1)]));
        assert_eq!(
            s.check(b"k", &CausalContext::new(), true),
            Coverage::NeedMore
        );
        assert_eq!(s.check(b"k", &ctx(&[(1, 1)]), true), Coverage::Covered);
        // A newer write by someone else also covers it.
        assert_eq!(
            s.check(b"k", &ctx(&[(1, 1), (1, 2)]), true),
            Coverage::Covered
        );
        // Monotonic reads: a read that saw actor 2's write raises the bar.
        s.record_read(b"k", &ctx(&[(1, 1), (2, 1)]), true);
        assert_eq!(s.check(b"k", &ctx(&[(1, 1)]), true), Coverage::NeedMore);
        assert_eq!(
            s.check(b"k", &ctx(&[(1, 1), (2, 1)]), true),
            Coverage::Covered
        );
        // A hole in the cloud is not covered.
        s.record_write(b"k", &ctx(&[(3, 5)]));
        assert_eq!(
            s.check(b"k", &ctx(&[(1, 1), (2, 1), (3, 4)]), true),
            Coverage::NeedMore
        );
        // Other keys are unaffected.
        assert_eq!(
            s.check(b"other", &CausalContext::new(), true),
            Coverage::Covered
        );
        s.forget(b"k");
        assert_eq!(
            s.check(b"k", &CausalContext::new(), true),
            Coverage::Covered
        );
        assert!(s.is_empty());
    }

    #[test]
    fn a_read_that_finds_nothing_is_answered_once_the_session_deleted_what_it_knew() {
        let mut s = SessionState::default();
        s.record_write(b"k", &ctx(&[(1, 1)]));
        assert_eq!(s.write_context(b"k", None), None, "a value is there");
        // The delete replaced the value (its context includes the put's).
        s.record_delete(b"k", &ctx(&[(1, 1), (1, 2)]));
        // A read that finds nothing agrees with the delete whatever its context: the
        // tombstone may have been reaped, or this replica never had the key.
        assert_eq!(
            s.check(b"k", &CausalContext::new(), false),
            Coverage::Absent
        );
        // A lagging replica still holding the deleted value is not answered.
        assert_eq!(s.check(b"k", &ctx(&[(1, 1)]), true), Coverage::NeedMore);
        assert_eq!(
            s.check(b"k", &ctx(&[(1, 1), (1, 2), (2, 1)]), true),
            Coverage::Covered
        );
        // The next write carries what the session deleted, so that its value's clock
        // includes it again; a caller's context that already does stands.
        let deleted = ctx(&[(1, 1), (1, 2)]);
        assert_eq!(s.write_context(b"k", None), Some(deleted.clone()));
        let mut given = ctx(&[(2, 1)]);
        let merged = s.write_context(b"k", Some(&given)).unwrap();
        assert!(merged.includes(&deleted) && merged.includes(&given));
        given.merge(&deleted);
        assert_eq!(s.write_context(b"k", Some(&given)), None);
        // Once a put is acknowledged the key holds a value again.
        s.record_write(b"k", &ctx(&[(1, 1), (1, 2), (1, 3)]));
        assert_eq!(
            s.check(b"k", &CausalContext::new(), false),
            Coverage::NeedMore
        );
        assert_eq!(s.write_context(b"k", None), None);
    }

    #[test]
    fn a_delete_that_left_a_value_the_session_knew_keeps_the_key_present() {
        let mut s = SessionState::default();
        s.record_write(b"k", &ctx(&[(1, 1)]));
        // A blind delete: the put's value stays beside its tombstone.
        s.record_delete(b"k", &ctx(&[(2, 1)]));
        assert_eq!(
            s.check(b"k", &CausalContext::new(), false),
            Coverage::NeedMore
        );
        assert_eq!(s.write_context(b"k", None), None);
        // A delete of a key the session never saw: nothing it knew survives.
        s.record_delete(b"fresh", &ctx(&[(2, 2)]));
        assert_eq!(
            s.check(b"fresh", &CausalContext::new(), false),
            Coverage::Absent
        );
    }

    #[test]
    fn a_read_that_found_nothing_makes_the_key_absent_and_one_with_values_present() {
        let mut s = SessionState::default();
        s.record_write(b"k", &ctx(&[(1, 1)]));
        // Someone else deleted it; the session read the tombstone.
        s.record_read(b"k", &ctx(&[(1, 1), (2, 1)]), false);
        assert_eq!(
            s.check(b"k", &CausalContext::new(), false),
            Coverage::Absent
        );
        assert_eq!(s.check(b"k", &ctx(&[(1, 1)]), true), Coverage::NeedMore);
        // Someone wrote it again and the session read that: present again.
        s.record_read(b"k", &ctx(&[(1, 1), (2, 1), (2, 2)]), true);
        assert_eq!(
            s.check(b"k", &CausalContext::new(), false),
            Coverage::NeedMore
        );
    }

    #[test]
    fn the_least_recently_used_key_is_forgotten_at_the_bound() {
        let mut s = SessionState::new(NonZeroUsize::new(2).unwrap());
        assert_eq!(s.record_write(b"a", &ctx(&[(1, 1)])), 0);
        assert_eq!(s.record_write(b"b", &ctx(&[(1, 2)])), 0);
        // Touch a, so b is the oldest.
        assert_eq!(s.record_read(b"a", &ctx(&[(1, 1)]), true), 0);
        assert_eq!(s.record_write(b"c", &ctx(&[(1, 3)])), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.evicted(), 1);
        assert!(s.required(b"b").is_none(), "b was the least recently used");
        assert!(s.required(b"a").is_some() && s.required(b"c").is_some());
        // An evicted key has lost its guarantee: any reply is accepted.
        assert_eq!(
            s.check(b"b", &CausalContext::new(), true),
            Coverage::Covered
        );
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
