//! Laws of objects and causal contexts, checked on objects made by random histories.
//!
//! A history is a sequence of puts, deletes, reads and merges on a few replicas of one
//! key. Replica `i` coordinates with actor `i + 1`, whose counter only grows (it simulates
//! the node-wide counter: other keys use counters too, so it may jump). Each write's
//! context is the union of a random subset of earlier contexts (reads' and writes'), so
//! every object the history makes is one a real cluster could hold, and one dot always
//! names one value.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use shoal_proto::{Actor, CausalContext, Dot, Object, SiblingValue, Time};

/// `cases` cases per property; failing inputs are kept next to this file for re-runs.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Replicas (and actors) of the histories.
const REPLICAS: usize = 3;

/// How many writes back the context of a racing write may be.
const MAX_LAG: usize = 3;

// ---------------------------------------------------------------------------------------
// The history model
// ---------------------------------------------------------------------------------------

/// One step of a history.
#[derive(Clone, Debug)]
enum Step {
    /// A put at replica `at`, with the union of the picked earlier contexts; the actor's
    /// counter first grows by `skip`.
    Put {
        at: usize,
        picks: Vec<Index>,
        skip: u64,
    },
    /// A delete, like a put but writing a tombstone.
    Delete {
        at: usize,
        picks: Vec<Index>,
        skip: u64,
    },
    /// Replica `into` merges what replica `from` holds.
    Merge { into: usize, from: usize },
    /// A client reads replica `at`; its context joins the pool.
    Read { at: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let picks = || vec(any::<Index>(), 0..3);
    prop_oneof![
        4 => (0..REPLICAS, picks(), 1..4u64)
            .prop_map(|(at, picks, skip)| Step::Put { at, picks, skip }),
        1 => (0..REPLICAS, picks(), 1..4u64)
            .prop_map(|(at, picks, skip)| Step::Delete { at, picks, skip }),
        3 => (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| Step::Merge { into, from }),
        2 => (0..REPLICAS).prop_map(|at| Step::Read { at }),
    ]
}

fn history() -> impl Strategy<Value = Vec<Step>> {
    vec(step(), 0..40)
}

/// Replicas of one key, the contexts clients have seen, and every value ever written.
struct World {
    replicas: Vec<Object>,
    counters: Vec<u64>,
    /// Contexts of reads and writes, in the order they were returned.
    contexts: Vec<CausalContext>,
    /// Every replica state the history went through.
    snapshots: Vec<Object>,
    /// The value of every dot ever minted.
    written: BTreeMap<Dot, SiblingValue>,
    clock_micros: u64,
    next_value: u64,
}

fn actor(replica: usize) -> Actor {
    Actor(replica as u64 + 1)
}

impl World {
    fn new(replicas: usize) -> World {
        World {
            replicas: vec![Object::new(); replicas],
            counters: vec![0; replicas],
            contexts: Vec::new(),
            snapshots: Vec::new(),
            written: BTreeMap::new(),
            clock_micros: 0,
            next_value: 0,
        }
    }

    fn replay(steps: &[Step]) -> World {
        let mut w = World::new(REPLICAS);
        for s in steps {
            w.apply(s);
        }
        w
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Put { at, picks, skip } => {
                let ctx = self.pick_context(picks, self.contexts.len());
                let value = self.next_data();
                self.write(*at, &ctx, value, *skip);
            }
            Step::Delete { at, picks, skip } => {
                let ctx = self.pick_context(picks, self.contexts.len());
                self.write(*at, &ctx, SiblingValue::Tombstone, *skip);
            }
            Step::Merge { into, from } => self.merge(*into, *from),
            Step::Read { at } => {
                let ctx = self.replicas[*at].context();
                self.contexts.push(ctx);
            }
        }
    }

    /// A fresh, never written data value.
    fn next_data(&mut self) -> SiblingValue {
        self.next_value += 1;
        SiblingValue::Data(format!("v{}", self.next_value).into_bytes())
    }

    /// The union of the picked contexts among the first `pool` of the pool.
    fn pick_context(&self, picks: &[Index], pool: usize) -> CausalContext {
        let mut ctx = CausalContext::new();
        if pool == 0 {
            return ctx;
        }
        for p in picks {
            ctx.merge(&self.contexts[p.index(pool)]);
        }
        ctx
    }

    /// A client write coordinated by replica `at`; returns the new dot and the context the
    /// coordinator hands back.
    fn write(
        &mut self,
        at: usize,
        ctx: &CausalContext,
        value: SiblingValue,
        skip: u64,
    ) -> (Dot, CausalContext) {
        self.counters[at] += skip;
        let dot = Dot::new(actor(at), self.counters[at]);
        self.clock_micros += 1;
        let reply = self.replicas[at]
            .update(
                ctx,
                value.clone(),
                dot,
                Time::from_micros(self.clock_micros),
            )
            .expect("a coordinator accepts its own fresh dot");
        assert!(
            self.written.insert(dot, value).is_none(),
            "dot {dot:?} minted twice"
        );
        self.contexts.push(reply.clone());
        self.snapshots.push(self.replicas[at].clone());
        (dot, reply)
    }

    fn merge(&mut self, into: usize, from: usize) {
        let other = self.replicas[from].clone();
        self.replicas[into].merge(&other);
        self.snapshots.push(self.replicas[into].clone());
    }

    /// The merge of every replica.
    fn global(&self) -> Object {
        self.replicas
            .iter()
            .fold(Object::new(), |acc, o| Object::merged(&acc, o))
    }

    /// Every replica takes the merge of all.
    fn sync_all(&mut self) {
        let g = self.global();
        for r in &mut self.replicas {
            r.merge(&g);
        }
    }

    /// An object of the history: a snapshot, a current replica, or the empty object.
    fn object(&self, i: &Index) -> Object {
        let all = self.snapshots.len() + self.replicas.len() + 1;
        let k = i.index(all);
        if k < self.snapshots.len() {
            self.snapshots[k].clone()
        } else if k < self.snapshots.len() + self.replicas.len() {
            self.replicas[k - self.snapshots.len()].clone()
        } else {
            Object::new()
        }
    }

    /// The highest counter minted by each actor.
    fn universe(&self) -> Vec<Dot> {
        let mut dots = Vec::new();
        for (i, &top) in self.counters.iter().enumerate() {
            for c in 1..=top + 1 {
                dots.push(Dot::new(actor(i), c));
            }
        }
        dots
    }
}

fn live(o: &Object) -> BTreeSet<Dot> {
    o.siblings().iter().map(|s| s.dot).collect()
}

fn data(s: &str) -> SiblingValue {
    SiblingValue::Data(s.as_bytes().to_vec())
}

/// Every sibling carries the value written under its dot, and the clock covers it.
fn assert_well_formed(w: &World, o: &Object) {
    let dots: Vec<Dot> = o.siblings().iter().map(|s| s.dot).collect();
    let mut sorted = dots.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(dots, sorted, "siblings are sorted by dot, one per dot");
    for s in o.siblings() {
        assert_eq!(Some(&s.value), w.written.get(&s.dot), "one dot, one value");
        assert!(
            o.clock().covers(s.dot),
            "the clock covers live sibling {:?}",
            s.dot
        );
    }
}

// ---------------------------------------------------------------------------------------
// Merge laws
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn histories_keep_one_value_per_dot_and_clocks_cover_siblings(h in history()) {
        let w = World::replay(&h);
        for o in w.snapshots.iter().chain(&w.replicas) {
            assert_well_formed(&w, o);
        }
    }

    #[test]
    fn merge_is_commutative(h in history(), a in any::<Index>(), b in any::<Index>()) {
        let w = World::replay(&h);
        let (a, b) = (w.object(&a), w.object(&b));
        prop_assert_eq!(Object::merged(&a, &b), Object::merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(
        h in history(),
        a in any::<Index>(),
        b in any::<Index>(),
        c in any::<Index>(),
    ) {
        let w = World::replay(&h);
        let (a, b, c) = (w.object(&a), w.object(&b), w.object(&c));
        let left = Object::merged(&Object::merged(&a, &b), &c);
        let right = Object::merged(&a, &Object::merged(&b, &c));
        prop_assert_eq!(left, right);
    }

    #[test]
    fn merge_is_idempotent_and_the_empty_object_is_neutral(h in history(), a in any::<Index>()) {
        let w = World::replay(&h);
        let a = w.object(&a);
        prop_assert_eq!(&Object::merged(&a, &a), &a);
        prop_assert_eq!(&Object::merged(&a, &Object::new()), &a);
        prop_assert_eq!(&Object::merged(&Object::new(), &a), &a);
        let mut b = a.clone();
        prop_assert!(!b.merge(&a), "merging what is already there reports no change");
        prop_assert!(a.includes(&a));
    }

    #[test]
    fn merge_keeps_a_sibling_iff_the_other_side_has_not_superseded_it(
        h in history(),
        a in any::<Index>(),
        b in any::<Index>(),
    ) {
        let w = World::replay(&h);
        let (a, b) = (w.object(&a), w.object(&b));
        let m = Object::merged(&a, &b);
        let (la, lb, lm) = (live(&a), live(&b), live(&m));
        for d in la.union(&lb) {
            let expected = (la.contains(d) && lb.contains(d))
                || (la.contains(d) && !b.clock().covers(*d))
                || (lb.contains(d) && !a.clock().covers(*d));
            prop_assert_eq!(lm.contains(d), expected, "sibling {:?}", d);
        }
        prop_assert!(lm.is_subset(&la.union(&lb).copied().collect()), "no sibling appears from nowhere");
        assert_well_formed(&w, &m);
        // The merged clock is the union of the two clocks.
        for d in w.universe() {
            prop_assert_eq!(
                m.clock().covers(d),
                a.clock().covers(d) || b.clock().covers(d),
                "clock coverage of {:?}", d
            );
        }
        prop_assert!(m.includes(&a) && m.includes(&b));
    }
}

// ---------------------------------------------------------------------------------------
// Writes with and without contexts
// ---------------------------------------------------------------------------------------

/// A step after the read: a write whose context comes from before the read, or a merge.
#[derive(Clone, Debug)]
enum After {
    Write {
        at: usize,
        picks: Vec<Index>,
        delete: bool,
    },
    Merge {
        into: usize,
        from: usize,
    },
}

fn after_step() -> impl Strategy<Value = After> {
    prop_oneof![
        (
            0..REPLICAS,
            vec(any::<Index>(), 0..2),
            prop::bool::weighted(0.2)
        )
            .prop_map(|(at, picks, delete)| After::Write { at, picks, delete }),
        (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| After::Merge { into, from }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_write_with_a_read_context_replaces_exactly_what_the_read_returned(
        h in history(),
        read_from in btree_set(0..REPLICAS, 1..=REPLICAS),
        after in vec(after_step(), 0..8),
        coordinator in 0..REPLICAS,
    ) {
        let mut w = World::replay(&h);
        // The read: the merge of the replicas it asked.
        let read = read_from
            .iter()
            .fold(Object::new(), |acc, &i| Object::merged(&acc, &w.replicas[i]));
        let ctx = read.context();
        let returned = live(&read);
        let pool_before_read = w.contexts.len();

        // Concurrent writes after the read (their contexts predate it), and merges.
        let mut after_read = BTreeSet::new();
        for s in &after {
            match s {
                After::Write { at, picks, delete } => {
                    let c = w.pick_context(picks, pool_before_read);
                    let value = if *delete { SiblingValue::Tombstone } else { w.next_data() };
                    let (dot, _) = w.write(*at, &c, value, 1);
                    after_read.insert(dot);
                }
                After::Merge { into, from } => w.merge(*into, *from),
            }
        }
        for d in &after_read {
            prop_assert!(!ctx.covers(*d), "the read's context cannot cover later writes");
        }

        let before = w.replicas[coordinator].clone();
        let global_before = w.global();
        let value = w.next_data();
        let (new_dot, reply) = w.write(coordinator, &ctx, value, 1);
        let after_write = w.replicas[coordinator].clone();

        // At the coordinator: what the context covers is gone (what the read returned,
        // and what the read's replicas had already superseded), later writes survive.
        let expected: BTreeSet<Dot> = live(&before)
            .into_iter()
            .filter(|d| !ctx.covers(*d))
            .chain([new_dot])
            .collect();
        prop_assert_eq!(live(&after_write), expected);
        prop_assert!(live(&after_write).is_disjoint(&returned));
        for d in live(&before).intersection(&after_read) {
            prop_assert!(live(&after_write).contains(d), "later write {:?} survives", d);
        }
        prop_assert!(reply.covers(new_dot));

        // Everywhere, once merged: the same, and every write made after the read survives.
        let global_after = w.global();
        let expected: BTreeSet<Dot> = live(&global_before)
            .difference(&returned)
            .copied()
            .chain([new_dot])
            .collect();
        prop_assert_eq!(live(&global_after), expected);
        prop_assert!(after_read.is_subset(&live(&global_after)), "concurrent writes survive");
    }

    #[test]
    fn the_context_a_write_returns_covers_the_write_but_not_the_siblings_it_left(
        h in history(),
        at in 0..REPLICAS,
        picks in vec(any::<Index>(), 0..3),
    ) {
        let mut w = World::replay(&h);
        let ctx = w.pick_context(&picks, w.contexts.len());
        let value = w.next_data();
        let (dot, reply) = w.write(at, &ctx, value, 1);
        prop_assert!(reply.covers(dot));
        for s in w.replicas[at].siblings() {
            if s.dot != dot {
                prop_assert!(
                    !reply.covers(s.dot),
                    "a next write with the reply would replace {:?}, which this writer never saw",
                    s.dot
                );
            }
        }
        // Nothing the request's context covered is lost, except the coordinator's own
        // older dots, which its object now carries as superseded. Nothing is added but
        // the new dot and the coordinator's own dots that are superseded there (its
        // clock covers them and they are not live): a next write covering those replaces
        // nothing the client has not seen.
        let coordinator = &w.replicas[at];
        for d in w.universe() {
            if ctx.covers(d) && d.actor != actor(at) {
                prop_assert!(reply.covers(d), "{:?} dropped from the reply", d);
            }
            if reply.covers(d) && !ctx.covers(d) && d != dot {
                prop_assert!(
                    d.actor == actor(at)
                        && d.counter < dot.counter
                        && coordinator.clock().covers(d)
                        && !live(coordinator).contains(&d),
                    "{:?} added to the reply",
                    d
                );
            }
        }
    }

    #[test]
    fn concurrent_writes_without_context_become_siblings(
        h in history(),
        writers in vec(0..REPLICAS, 1..=6),
    ) {
        let mut w = World::replay(&h);
        w.sync_all();
        let before = live(&w.global());
        let mut new = BTreeSet::new();
        let mut values = Vec::new();
        for &at in &writers {
            let value = w.next_data();
            values.push(value.clone());
            let (dot, _) = w.write(at, &CausalContext::new(), value, 1);
            new.insert(dot);
        }
        w.sync_all();
        let g = w.global();
        prop_assert_eq!(new.len(), writers.len());
        let expected: BTreeSet<Dot> = before.union(&new).copied().collect();
        prop_assert_eq!(live(&g), expected, "nothing is replaced, every write is a sibling");
        for v in &values {
            prop_assert!(g.siblings().iter().any(|s| &s.value == v));
        }
    }

    #[test]
    fn k_writers_without_context_on_a_fresh_key_make_k_siblings(
        writers in vec(0..REPLICAS, 1..=8),
    ) {
        let mut w = World::new(REPLICAS);
        for &at in &writers {
            let value = w.next_data();
            w.write(at, &CausalContext::new(), value, 1);
        }
        w.sync_all();
        for r in &w.replicas {
            prop_assert_eq!(r.siblings().len(), writers.len());
            prop_assert_eq!(r.values().count(), writers.len());
        }
    }

    #[test]
    fn a_delete_with_a_read_context_hides_the_key_and_a_put_with_its_context_revives_it(
        h in history(),
        deleter in 0..REPLICAS,
        reviver in 0..REPLICAS,
    ) {
        let mut w = World::replay(&h);
        w.sync_all();
        let ctx = w.replicas[deleter].context();
        let (tombstone, delete_ctx) = w.write(deleter, &ctx, SiblingValue::Tombstone, 1);
        let o = &w.replicas[deleter];
        prop_assert!(!o.is_found());
        prop_assert!(o.is_tombstoned());
        prop_assert_eq!(live(o), BTreeSet::from([tombstone]));
        w.sync_all();
        for r in &w.replicas {
            prop_assert!(!r.is_found(), "the delete reaches every replica");
        }

        let (revived, _) = w.write(reviver, &delete_ctx, data("back"), 1);
        w.sync_all();
        for r in &w.replicas {
            prop_assert!(r.is_found());
            prop_assert_eq!(live(r), BTreeSet::from([revived]), "the tombstone is replaced");
            prop_assert_eq!(r.values().collect::<Vec<_>>(), vec![b"back".as_slice()]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sibling explosion (the Riak pattern)
// ---------------------------------------------------------------------------------------

/// Two writers alternate on one key for `rounds` rounds, each writing with the context its
/// own last write returned. `coordinator(round, writer)` picks the coordinating replica;
/// every replica merges everything after each write.
fn alternating_writers(
    replicas: usize,
    rounds: usize,
    coordinator: impl Fn(usize, usize) -> usize,
) {
    let mut w = World::new(replicas);
    let mut contexts = [CausalContext::new(), CausalContext::new()];
    let mut latest: [Option<Vec<u8>>; 2] = [None, None];
    for round in 0..rounds {
        for writer in 0..2 {
            let value = format!("writer{writer}-round{round}").into_bytes();
            let at = coordinator(round, writer);
            let (_, reply) = w.write(at, &contexts[writer], SiblingValue::Data(value.clone()), 1);
            contexts[writer] = reply;
            latest[writer] = Some(value);
            w.sync_all();

            for r in &w.replicas {
                assert!(
                    r.siblings().len() <= 2,
                    "round {round}, writer {writer}: {} siblings: {r:?}",
                    r.siblings().len()
                );
                let values: Vec<&[u8]> = r.values().collect();
                for v in latest.iter().flatten() {
                    assert!(
                        values.contains(&v.as_slice()),
                        "round {round}: the latest value {:?} of a writer is missing from {values:?}",
                        String::from_utf8_lossy(v)
                    );
                }
            }
            let ctx = &contexts[writer];
            assert!(
                ctx.cloud().len() <= replicas,
                "round {round}: the returned context grew: {ctx:?}"
            );
            assert!(
                ctx.encoded_len_hint() <= 2 * replicas,
                "round {round}: {ctx:?}"
            );
        }
    }
}

#[test]
fn two_writers_reusing_their_own_contexts_on_one_coordinator_never_explode() {
    alternating_writers(1, 100, |_, _| 0);
}

#[test]
fn two_writers_alternating_between_two_coordinators_never_explode() {
    alternating_writers(2, 100, |round, writer| (round + writer) % 2);
}

#[test]
fn two_writers_each_on_its_own_coordinator_never_explode() {
    alternating_writers(2, 100, |_, writer| writer);
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn two_writers_on_random_coordinators_never_explode(coordinators in vec(0..REPLICAS, 200)) {
        alternating_writers(REPLICAS, 100, |round, writer| coordinators[2 * round + writer]);
    }
}

// ---------------------------------------------------------------------------------------
// Causal context laws
// ---------------------------------------------------------------------------------------

/// A way to grow a context: add one dot, or raise an actor's vector entry.
#[derive(Clone, Debug)]
enum CtxOp {
    Insert(u64, u64),
    Raise(u64, u64),
}

fn ctx_ops() -> impl Strategy<Value = Vec<CtxOp>> {
    vec(
        prop_oneof![
            3 => (1..=3u64, 1..=12u64).prop_map(|(a, c)| CtxOp::Insert(a, c)),
            1 => (1..=3u64, 0..=8u64).prop_map(|(a, c)| CtxOp::Raise(a, c)),
        ],
        0..14,
    )
}

/// The context the ops build, and the set of dots it must cover.
fn build(ops: &[CtxOp]) -> (CausalContext, BTreeSet<Dot>) {
    let mut ctx = CausalContext::new();
    let mut model = BTreeSet::new();
    for op in ops {
        match *op {
            CtxOp::Insert(a, c) => {
                ctx.insert(Dot::new(Actor(a), c));
                model.insert(Dot::new(Actor(a), c));
            }
            CtxOp::Raise(a, c) => {
                ctx.raise(Actor(a), c);
                model.extend((1..=c).map(|k| Dot::new(Actor(a), k)));
            }
        }
    }
    (ctx, model)
}

/// Every dot the contexts of [`ctx_ops`] could cover, and some beyond.
fn dot_universe() -> impl Iterator<Item = Dot> {
    (1..=4u64).flat_map(|a| (1..=14u64).map(move |c| Dot::new(Actor(a), c)))
}

fn covered(ctx: &CausalContext) -> BTreeSet<Dot> {
    dot_universe().filter(|d| ctx.covers(*d)).collect()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_context_covers_exactly_the_dots_put_into_it(ops in ctx_ops()) {
        let (ctx, model) = build(&ops);
        prop_assert_eq!(covered(&ctx), model.clone());
        for a in 1..=4u64 {
            let top = model.iter().filter(|d| d.actor == Actor(a)).map(|d| d.counter).max();
            prop_assert_eq!(ctx.max_counter(Actor(a)), top.unwrap_or(0));
        }
        prop_assert_eq!(ctx.is_empty(), model.is_empty());
        // Canonical: the cloud holds no dot the vector covers or could absorb.
        for d in ctx.cloud() {
            prop_assert!(d.counter > ctx.vv().get(d.actor) + 1, "cloud dot {:?} in {:?}", d, ctx);
        }
    }

    #[test]
    fn contexts_covering_the_same_dots_are_equal(ops in ctx_ops(), seed in any::<u64>()) {
        let (ctx, model) = build(&ops);
        // The same dots, inserted one by one in a different order.
        let mut dots: Vec<Dot> = model.iter().copied().collect();
        let len = dots.len();
        if len > 1 {
            dots.rotate_left((seed as usize) % len);
        }
        if seed % 2 == 1 {
            dots.reverse();
        }
        let mut other = CausalContext::new();
        for d in dots {
            other.insert(d);
        }
        prop_assert_eq!(&other, &ctx);
        let mut compacted = ctx.clone();
        compacted.compact();
        prop_assert_eq!(compacted, ctx);
    }

    #[test]
    fn context_merge_is_union_commutative_associative_idempotent(
        a in ctx_ops(),
        b in ctx_ops(),
        c in ctx_ops(),
    ) {
        let ((a, ma), (b, mb), (c, _)) = (build(&a), build(&b), build(&c));
        let merged = |x: &CausalContext, y: &CausalContext| {
            let mut m = x.clone();
            m.merge(y);
            m
        };
        let ab = merged(&a, &b);
        prop_assert_eq!(&ab, &merged(&b, &a));
        prop_assert_eq!(merged(&ab, &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(&merged(&a, &a), &a);
        prop_assert_eq!(&merged(&a, &CausalContext::new()), &a);
        let union: BTreeSet<Dot> = ma.union(&mb).copied().collect();
        prop_assert_eq!(covered(&ab), union);
        for d in dot_universe() {
            prop_assert_eq!(ab.covers(d), a.covers(d) || b.covers(d));
        }
    }

    #[test]
    fn includes_is_set_inclusion(a in ctx_ops(), b in ctx_ops()) {
        let ((a, ma), (b, mb)) = (build(&a), build(&b));
        prop_assert_eq!(a.includes(&b), mb.is_subset(&ma), "{:?} includes {:?}", a, b);
        prop_assert_eq!(b.includes(&a), ma.is_subset(&mb), "{:?} includes {:?}", b, a);
        prop_assert!(a.includes(&a));
        prop_assert!(a.includes(&CausalContext::new()));
        let mut ab = a.clone();
        ab.merge(&b);
        prop_assert!(ab.includes(&a) && ab.includes(&b));
    }

    #[test]
    fn contexts_returned_by_updates_stay_bounded_by_the_number_of_actors(
        coordinators in vec(0..REPLICAS, 100),
    ) {
        // One client writing 100 times with the context of its previous write, at random
        // coordinators that exchange everything after each write.
        let mut w = World::new(REPLICAS);
        let mut ctx = CausalContext::new();
        for (round, &at) in coordinators.iter().enumerate() {
            let value = w.next_data();
            let (_, reply) = w.write(at, &ctx, value, 1 + (round as u64 % 3));
            ctx = reply;
            w.sync_all();
            prop_assert!(ctx.cloud().len() <= REPLICAS, "round {}: {:?}", round, ctx);
            prop_assert!(ctx.vv().len() <= REPLICAS);
            for r in &w.replicas {
                prop_assert_eq!(r.siblings().len(), 1, "a lone writer never makes siblings");
            }
        }
    }

    #[test]
    fn a_client_that_keeps_the_union_of_its_write_contexts_keeps_it_bounded(
        writes in vec((0..REPLICAS, 0..=MAX_LAG, 1..50u64, any::<bool>()), 300),
    ) {
        // A write-only client (shoal-bench's update workload): each write's context is the
        // union of every context its earlier writes returned, some of them racing (they
        // use the union as it was a few writes ago); counters jump, as other keys use
        // them. Before, each reply kept every dot the request's context had of other
        // actors, so the union grew by one dot per write, forever.
        let mut w = World::new(REPLICAS);
        let mut unions = vec![CausalContext::new()];
        for (i, &(at, lag, skip, sync)) in writes.iter().enumerate() {
            let ctx = unions[unions.len().saturating_sub(1 + lag)].clone();
            let value = w.next_data();
            let (_, reply) = w.write(at, &ctx, value, skip);
            let mut union = unions.last().cloned().unwrap_or_default();
            union.merge(&reply);
            unions.push(union);
            if sync {
                w.sync_all();
            }
            let last = unions.last().unwrap_or(&ctx);
            prop_assert!(
                // At most one dot per actor for each write still racing.
                last.cloud().len() <= REPLICAS * (1 + MAX_LAG),
                "write {}: the union holds {} cloud dots: {:?}",
                i,
                last.cloud().len(),
                last
            );
        }
    }
}
