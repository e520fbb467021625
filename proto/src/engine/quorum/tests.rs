//! The quorum tracker on its own: placement, PR/PW counting, fallbacks standing in and
//! replacing, and the met / waiting / impossible status with its numbers, the last
//! checked against a plain model over every small configuration and outcome sequence.

use std::collections::VecDeque;

use shoal_ring::NodeId;

use super::{Needed, Quorum, Shortfall, Status, Target, LOCAL};
use crate::error::RequestError;

fn id(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| id(n)).collect()
}

fn spare(names: &[&str]) -> Option<VecDeque<NodeId>> {
    Some(ids(names).into())
}

fn needed(all: usize, primaries: usize) -> Needed {
    Needed { all, primaries }
}

fn up_except<'a>(down: &'a [&'a str]) -> impl Fn(&NodeId) -> bool + 'a {
    move |n| !down.contains(&n.as_str())
}

fn all_up(_: &NodeId) -> bool {
    true
}

fn target(slot: usize, node: &str, hint_for: Option<&str>) -> Target {
    Target {
        slot,
        node: id(node),
        hint_for: hint_for.map(id),
    }
}

fn impossible(needed: usize, alive: usize) -> Status {
    Status::Impossible(Shortfall { needed, alive })
}

/// `me` is "a", the primaries "a", "b", "c", `down` of them down.
fn place3(
    needed: Needed,
    fallbacks: Option<VecDeque<NodeId>>,
    down: &[&str],
) -> Result<Quorum<()>, Shortfall> {
    Quorum::place(
        &id("a"),
        &ids(&["a", "b", "c"]),
        needed,
        fallbacks,
        up_except(down),
    )
}

#[test]
fn all_up_places_me_first_then_the_other_primaries() {
    let q = place3(needed(2, 1), spare(&["f1"]), &[]).expect("placed");
    assert_eq!(
        q.remote_targets(),
        vec![target(1, "b", None), target(2, "c", None)]
    );
    assert!(q.is_pending(LOCAL));
    assert_eq!(q.pending(), 3);
    assert_eq!(q.answers(), 0);
    assert_eq!(q.needed(), needed(2, 1));
    assert!(q.unplaced().is_empty());
    assert_eq!(q.status(), Status::Waiting);
}

#[test]
fn a_coordinator_outside_the_primaries_still_counts_as_a_primary() {
    let mut q: Quorum<()> = Quorum::place(
        &id("x"),
        &ids(&["a", "b", "c"]),
        needed(2, 2),
        spare(&[]),
        all_up,
    )
    .expect("placed");
    assert_eq!(
        q.remote_targets(),
        vec![
            target(1, "a", None),
            target(2, "b", None),
            target(3, "c", None)
        ]
    );
    q.record(LOCAL, ());
    assert_eq!(q.status(), Status::Waiting);
    q.record(3, ());
    assert_eq!(q.status(), Status::Met);
}

#[test]
fn fallbacks_stand_in_for_down_primaries_in_ring_order() {
    let q: Quorum<()> = Quorum::place(
        &id("a"),
        &ids(&["a", "b", "c", "d"]),
        needed(4, 2),
        spare(&["f1", "f2", "f3"]),
        up_except(&["b", "d"]),
    )
    .expect("placed");
    assert_eq!(
        q.remote_targets(),
        vec![
            target(1, "f1", Some("b")),
            target(2, "c", None),
            target(3, "f2", Some("d")),
        ]
    );
    assert!(q.unplaced().is_empty());
}

#[test]
fn a_down_primary_with_no_fallback_left_is_unplaced() {
    let q = place3(needed(2, 1), spare(&["f1"]), &["b", "c"]).expect("placed");
    assert_eq!(q.remote_targets(), vec![target(1, "f1", Some("b"))]);
    assert_eq!(q.unplaced(), ids(&["c"]).as_slice());
}

#[test]
fn without_stand_ins_a_down_primary_gets_nothing_and_is_not_unplaced() {
    let mut q = place3(needed(2, 1), None, &["c"]).expect("placed");
    assert_eq!(q.remote_targets(), vec![target(1, "b", None)]);
    assert!(q.unplaced().is_empty());
    q.record(LOCAL, ());
    // Nothing replaces b, and nothing is recorded for it.
    assert_eq!(q.fail(1, all_up), None);
    assert!(q.unplaced().is_empty());
    assert_eq!(q.status(), impossible(2, 1));
}

/// Down primaries, fallbacks offered, what is needed, and the shortfall expected.
type PlacementCase = (
    &'static [&'static str],
    &'static [&'static str],
    Needed,
    Option<Shortfall>,
);

#[test]
fn placement_shortfall_names_the_total_before_the_primaries() {
    let cases: Vec<PlacementCase> = vec![
        (&[], &[], needed(3, 3), None),
        (
            &["b"],
            &[],
            needed(3, 1),
            Some(Shortfall {
                needed: 3,
                alive: 2,
            }),
        ),
        (&["b"], &["f1"], needed(3, 1), None),
        (
            &["b"],
            &["f1"],
            needed(3, 3),
            Some(Shortfall {
                needed: 3,
                alive: 2,
            }),
        ),
        (
            &["b", "c"],
            &[],
            needed(2, 2),
            Some(Shortfall {
                needed: 2,
                alive: 1,
            }),
        ),
        (
            &["b", "c"],
            &["f1"],
            needed(2, 2),
            Some(Shortfall {
                needed: 2,
                alive: 1,
            }),
        ),
        (&["b", "c"], &["f1", "f2"], needed(3, 1), None),
        // Both short: the total is reported.
        (
            &["b", "c"],
            &[],
            needed(3, 2),
            Some(Shortfall {
                needed: 3,
                alive: 1,
            }),
        ),
        // More than N can never be placed, whatever fallbacks are left over.
        (
            &[],
            &["f1", "f2"],
            needed(4, 1),
            Some(Shortfall {
                needed: 4,
                alive: 3,
            }),
        ),
    ];
    for (down, fallbacks, need, expected) in cases {
        let placed = place3(need, spare(fallbacks), down);
        assert_eq!(
            placed.as_ref().err().copied(),
            expected,
            "down {down:?}, fallbacks {fallbacks:?}, {need:?}"
        );
    }
}

#[test]
fn a_shortfall_is_an_unavailable_error_with_the_same_numbers() {
    let err = RequestError::from(Shortfall {
        needed: 3,
        alive: 1,
    });
    assert_eq!(
        err,
        RequestError::Unavailable {
            needed: 3,
            alive: 1
        }
    );
}

#[test]
fn every_r_or_w_from_one_to_n_is_met_after_exactly_that_many_answers() {
    for n in 1..=5usize {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let primaries: Vec<NodeId> = names.iter().map(|s| id(s)).collect();
        for w in 1..=n {
            let mut q: Quorum<()> =
                Quorum::place(&primaries[0], &primaries, needed(w, 1), spare(&[]), all_up)
                    .expect("placed");
            for slot in 0..n {
                let expected = if slot < w {
                    Status::Waiting
                } else {
                    Status::Met
                };
                assert_eq!(q.status(), expected, "N={n} W={w} after {slot} answers");
                q.record(slot, ());
            }
            assert_eq!(q.status(), Status::Met, "N={n} W={w}");
        }
    }
}

#[test]
fn waiting_becomes_met_and_met_stays_met() {
    let mut q = place3(needed(2, 1), spare(&["f1"]), &[]).expect("placed");
    q.record(LOCAL, ());
    assert_eq!(q.status(), Status::Waiting);
    q.record(2, ());
    assert_eq!(q.status(), Status::Met);
    // A late failure still gets a replacement (delivery goes on) but changes nothing.
    assert_eq!(q.fail(1, all_up), Some(target(3, "f1", Some("b"))));
    assert_eq!(q.status(), Status::Met);
    q.refuse(3);
    assert_eq!(q.status(), Status::Met);
    assert_eq!(q.pending(), 0);
}

#[test]
fn waiting_becomes_impossible_with_the_numbers() {
    let mut q = place3(needed(3, 1), spare(&[]), &[]).expect("placed");
    q.record(LOCAL, ());
    assert_eq!(q.status(), Status::Waiting);
    assert_eq!(q.fail(1, all_up), None);
    assert_eq!(q.status(), impossible(3, 2));
    // Impossible stays impossible, whatever else comes.
    q.record(2, ());
    assert_eq!(q.status(), impossible(3, 2));
}

#[test]
fn unused_fallbacks_keep_the_quorum_possible() {
    let mut q = place3(needed(3, 1), spare(&["f1"]), &[]).expect("placed");
    q.record(LOCAL, ());
    // b failed but f1 stands in: 1 answer + 2 pending (c, f1) can still make 3.
    let replacement = q.fail(1, all_up);
    assert_eq!(replacement, Some(target(3, "f1", Some("b"))));
    assert_eq!(q.status(), Status::Waiting);
    q.record(3, ());
    q.record(2, ());
    assert_eq!(q.status(), Status::Met);
}

#[test]
fn fallback_answers_count_to_w_but_not_to_pw() {
    let mut q = place3(needed(2, 2), spare(&["f1"]), &["b"]).expect("placed");
    q.record(LOCAL, ());
    q.record(1, ()); // f1, standing in for b
    assert_eq!(q.answers(), 2);
    assert_eq!(q.status(), Status::Waiting);
    q.record(2, ()); // c
    assert_eq!(q.status(), Status::Met);

    let mut q = place3(needed(2, 2), spare(&["f1", "f2"]), &["b"]).expect("placed");
    q.record(LOCAL, ());
    q.record(1, ());
    // The last primary fails: two answers, but only one can come from a primary, and
    // the fallback replacing c does not change that.
    assert_eq!(q.fail(2, all_up), Some(target(3, "f2", Some("c"))));
    assert_eq!(q.status(), impossible(2, 1));
}

#[test]
fn a_failed_slot_is_replaced_by_the_next_healthy_fallback_for_the_same_primary() {
    let mut q = place3(needed(1, 1), spare(&["f1", "f2", "f3"]), &[]).expect("placed");
    // b fails: f1 is down and dropped, f2 stands in for b.
    assert_eq!(
        q.fail(1, up_except(&["f1"])),
        Some(target(3, "f2", Some("b")))
    );
    // f2 fails: its replacement is hinted for b too, not for f2.
    assert_eq!(q.fail(3, all_up), Some(target(4, "f3", Some("b"))));
    // f3 fails: nothing left, b is unplaced.
    assert_eq!(q.fail(4, all_up), None);
    assert_eq!(q.unplaced(), ids(&["b"]).as_slice());
    // The coordinator's own slot fails: nothing left either, and it is unplaced too.
    assert_eq!(q.fail(LOCAL, all_up), None);
    assert_eq!(q.unplaced(), ids(&["b", "a"]).as_slice());
    assert_eq!(q.pending(), 1);
}

#[test]
fn the_coordinators_own_slot_is_replaced_by_a_fallback_hinted_for_it() {
    let mut q = place3(needed(2, 1), spare(&["f1"]), &[]).expect("placed");
    assert_eq!(q.fail(LOCAL, all_up), Some(target(3, "f1", Some("a"))));
}

#[test]
fn down_fallbacks_are_dropped_and_no_longer_count_as_possible() {
    let mut q = place3(needed(3, 1), spare(&["f1", "f2"]), &[]).expect("placed");
    q.record(LOCAL, ());
    assert_eq!(q.fail(1, up_except(&["f1", "f2"])), None);
    assert_eq!(q.unplaced(), ids(&["b"]).as_slice());
    assert_eq!(q.status(), impossible(3, 2));
}

#[test]
fn a_primary_is_recorded_unplaced_once() {
    let mut q: Quorum<()> = Quorum::place(
        &id("a"),
        &ids(&["a", "b", "b"]),
        needed(1, 1),
        spare(&[]),
        all_up,
    )
    .expect("placed");
    assert_eq!(q.fail(1, all_up), None);
    assert_eq!(q.fail(2, all_up), None);
    assert_eq!(q.unplaced(), ids(&["b"]).as_slice());
}

#[test]
fn a_refused_slot_is_not_replaced_nor_unplaced() {
    let mut q = place3(needed(3, 1), spare(&["f1"]), &[]).expect("placed");
    q.record(LOCAL, ());
    q.refuse(1);
    assert!(!q.is_pending(1));
    assert!(q.unplaced().is_empty());
    assert_eq!(q.remote_targets().len(), 2);
    // The fallback was not used, so it still counts as possible.
    assert_eq!(q.status(), Status::Waiting);
    // ...and a later failure can still use it.
    assert_eq!(q.fail(2, all_up), Some(target(3, "f1", Some("c"))));
}

#[test]
fn outcomes_for_settled_or_unknown_slots_are_ignored() {
    let mut q = place3(needed(3, 3), spare(&["f1"]), &[]).expect("placed");
    q.record(1, ());
    q.record(1, ());
    assert_eq!(q.answers(), 1);
    assert_eq!(q.fail(1, all_up), None);
    q.refuse(1);
    assert_eq!(q.answers(), 1);
    assert_eq!(q.fail(2, all_up), Some(target(3, "f1", Some("c"))));
    q.record(2, ());
    assert_eq!(q.fail(2, all_up), None);
    assert_eq!(q.answers(), 1);
    assert!(!q.is_pending(99));
    q.record(99, ());
    q.refuse(99);
    assert_eq!(q.fail(99, all_up), None);
    assert_eq!(q.answers(), 1);
    assert_eq!(q.pending(), 2);
    assert!(q.unplaced().is_empty());
}

#[test]
fn answers_come_back_in_slot_order_with_their_nodes() {
    let mut q: Quorum<&str> = Quorum::place(
        &id("a"),
        &ids(&["a", "b", "c"]),
        needed(1, 1),
        spare(&["f1"]),
        up_except(&["c"]),
    )
    .expect("placed");
    q.record(2, "from f1");
    q.record(LOCAL, "local");
    assert_eq!(q.fail(1, all_up), None);
    let answers: Vec<_> = q.into_answers().collect();
    assert_eq!(
        answers,
        vec![
            (id("a"), None, "local"),
            (id("f1"), Some(id("c")), "from f1")
        ]
    );
}

/// What happens to a slot in the exhaustive run.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Answer,
    Fail,
    Refuse,
}

/// The plain model the tracker is checked against: slots as (is primary, pending,
/// answered), the fallbacks left with whether each is up.
#[derive(Clone, Debug)]
struct Model {
    need: Needed,
    slots: Vec<(bool, bool, bool)>,
    spare: Option<Vec<bool>>,
}

impl Model {
    fn status(&self) -> Status {
        let answered = self.slots.iter().filter(|s| s.2).count();
        let answered_primaries = self.slots.iter().filter(|s| s.2 && s.0).count();
        if answered >= self.need.all && answered_primaries >= self.need.primaries {
            return Status::Met;
        }
        let pending = self.slots.iter().filter(|s| s.1).count();
        let pending_primaries = self.slots.iter().filter(|s| s.1 && s.0).count();
        let all = answered + pending + self.spare.as_ref().map_or(0, Vec::len);
        let primaries = answered_primaries + pending_primaries;
        if all < self.need.all {
            impossible(self.need.all, all)
        } else if primaries < self.need.primaries {
            impossible(self.need.primaries, primaries)
        } else {
            Status::Waiting
        }
    }

    /// Settles the first pending slot; returns it, and whether a replacement is expected.
    fn settle(&mut self, outcome: Outcome) -> Option<(usize, bool)> {
        let slot = self.slots.iter().position(|s| s.1)?;
        self.slots[slot].1 = false;
        match outcome {
            Outcome::Answer => {
                self.slots[slot].2 = true;
                Some((slot, false))
            }
            Outcome::Refuse => Some((slot, false)),
            Outcome::Fail => {
                let Some(spare) = self.spare.as_mut() else {
                    return Some((slot, false));
                };
                while !spare.is_empty() {
                    if spare.remove(0) {
                        self.slots.push((false, true, false));
                        return Some((slot, true));
                    }
                }
                Some((slot, false))
            }
        }
    }
}

/// Every outcome sequence (each step settles the first pending slot) from `q`, checking
/// the status after each step against the model and that met and impossible are final.
fn explore(q: &Quorum<()>, model: &Model, fallback_up: &dyn Fn(&NodeId) -> bool) {
    let status = q.status();
    assert_eq!(status, model.status(), "{model:?}");
    for outcome in [Outcome::Answer, Outcome::Fail, Outcome::Refuse] {
        let mut m = model.clone();
        let Some((slot, replaced)) = m.settle(outcome) else {
            return;
        };
        let mut next = q.clone();
        assert!(next.is_pending(slot));
        match outcome {
            Outcome::Answer => next.record(slot, ()),
            Outcome::Refuse => next.refuse(slot),
            Outcome::Fail => {
                let replacement = next.fail(slot, fallback_up);
                assert_eq!(replacement.is_some(), replaced, "{m:?}");
                if let Some(t) = replacement {
                    assert_eq!(t.slot, m.slots.len() - 1);
                    assert!(t.hint_for.is_some());
                }
            }
        }
        assert!(!next.is_pending(slot));
        assert_eq!(next.pending(), m.slots.iter().filter(|s| s.1).count());
        let after = next.status();
        match status {
            Status::Met => assert_eq!(after, Status::Met),
            Status::Impossible(_) => assert!(matches!(after, Status::Impossible(_))),
            Status::Waiting => {}
        }
        explore(&next, &m, fallback_up);
    }
}

#[test]
fn status_matches_the_model_for_every_small_configuration_and_outcome_sequence() {
    let names = ["p0", "p1", "p2", "p3"];
    // Fallbacks "u*" are up, "d*" down (they drop out when a replacement is looked for).
    let fallback_lists: [&[&str]; 4] = [&[], &["u1"], &["d1", "u2"], &["u1", "u2"]];
    let fallback_up = |n: &NodeId| !n.as_str().starts_with('d');
    for n in 1..=names.len() {
        let primaries = ids(&names[..n]);
        for down_mask in 0..(1u32 << (n - 1)) {
            let is_down = |i: usize| i > 0 && down_mask & (1 << (i - 1)) != 0;
            let up = |node: &NodeId| {
                let i = primaries.iter().position(|p| p == node);
                match i {
                    Some(i) => !is_down(i),
                    None => fallback_up(node),
                }
            };
            for fallbacks in fallback_lists {
                for stand_ins in [false, true] {
                    for all in 1..=n + 1 {
                        for need_primaries in 0..=all {
                            let need = needed(all, need_primaries);
                            let offered = stand_ins.then(|| ids(fallbacks).into());
                            let placed: Result<Quorum<()>, Shortfall> =
                                Quorum::place(&primaries[0], &primaries, need, offered, up);
                            // The model's placement: me, then each up primary, then
                            // each down one covered by the next fallback (up or not).
                            let mut spare: Vec<bool> =
                                fallbacks.iter().map(|f| !f.starts_with('d')).collect();
                            let mut slots = vec![(true, true, false)];
                            for i in 1..n {
                                if !is_down(i) {
                                    slots.push((true, true, false));
                                } else if stand_ins && !spare.is_empty() {
                                    spare.remove(0);
                                    slots.push((false, true, false));
                                }
                            }
                            let reachable = slots.len();
                            let reachable_primaries = slots.iter().filter(|s| s.0).count();
                            let context = format!(
                                "N={n} down={down_mask:b} fallbacks={fallbacks:?} \
                                 stand_ins={stand_ins} {need:?}"
                            );
                            let q = match placed {
                                Err(short) => {
                                    let expected = if reachable < all {
                                        Shortfall {
                                            needed: all,
                                            alive: reachable,
                                        }
                                    } else {
                                        assert!(reachable_primaries < need_primaries, "{context}");
                                        Shortfall {
                                            needed: need_primaries,
                                            alive: reachable_primaries,
                                        }
                                    };
                                    assert_eq!(short, expected, "{context}");
                                    continue;
                                }
                                Ok(q) => q,
                            };
                            assert!(
                                reachable >= all && reachable_primaries >= need_primaries,
                                "{context}"
                            );
                            assert_eq!(q.pending(), reachable, "{context}");
                            let model = Model {
                                need,
                                slots,
                                spare: stand_ins.then_some(spare),
                            };
                            explore(&q, &model, &fallback_up);
                        }
                    }
                }
            }
        }
    }
}

/// During a move a write needs W in the old set AND in the new one: two answers from
/// the old set alone (the coordinator's own copy and "c") are not enough when the new
/// set ("a", "b", "d") has only one of them.
#[test]
fn a_write_during_a_move_needs_its_quorum_in_each_set() {
    let sets = vec![ids(&["a", "b", "c"]), ids(&["a", "b", "d"])];
    let mut q: Quorum<()> =
        Quorum::place_in_sets(&id("a"), &sets, needed(2, 0), spare(&["e"]), all_up).unwrap();
    let targets = q.remote_targets();
    let nodes: Vec<&str> = targets.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes, ["b", "c", "d"]);
    q.record(LOCAL, ());
    let slot = |q: &Quorum<()>, n: &str| {
        q.remote_targets()
            .iter()
            .find(|t| t.node.as_str() == n)
            .map(|t| t.slot)
            .unwrap()
    };
    let c = slot(&q, "c");
    q.record(c, ());
    assert_eq!(q.status(), Status::Waiting, "the new set has one copy only");
    // "d" fails: the fallback "e" stands in for it, hinted, and counts for the new set.
    let d = slot(&q, "d");
    let f = q.fail(d, all_up).unwrap();
    assert_eq!(f.hint_for, Some(id("d")));
    assert_eq!(q.status(), Status::Waiting);
    q.record(f.slot, ());
    assert_eq!(q.status(), Status::Met);
}

#[test]
fn a_set_that_cannot_be_met_refuses_the_write_up_front_or_later() {
    let sets = vec![ids(&["a", "b", "c"]), ids(&["d", "e", "f"])];
    // Without fallbacks, the new set with two of three down cannot get W = 2.
    let short =
        Quorum::<()>::place_in_sets(&id("a"), &sets, needed(2, 0), None, up_except(&["d", "e"]))
            .unwrap_err();
    assert_eq!(
        short,
        Shortfall {
            needed: 2,
            alive: 1
        }
    );
    let mut q: Quorum<()> =
        Quorum::place_in_sets(&id("a"), &sets, needed(2, 0), None, all_up).unwrap();
    q.record(LOCAL, ());
    let slots: Vec<Target> = q.remote_targets();
    for t in &slots {
        if t.node.as_str() != "b" && t.node.as_str() != "c" {
            q.fail(t.slot, all_up);
        }
    }
    assert_eq!(q.status(), impossible(2, 0));
}

#[test]
fn idle_slots_are_asked_primaries_first_and_as_many_as_the_quorum_needs() {
    // b is down: f1 stands in for it at slot 1, c is slot 2.
    let mut q = place3(needed(2, 0), spare(&["f1", "f2"]), &["b"]).expect("placed");
    q.idle_remote();
    assert_eq!(
        (q.idle(), q.pending()),
        (2, 1),
        "only the local store asked"
    );
    assert_eq!(q.asks_short(), 1);
    // The primary c before the fallback in the earlier slot.
    assert_eq!(q.ask_next(), Some(target(2, "c", None)));
    assert_eq!(q.asks_short(), 0);
    assert_eq!(q.ask_next(), Some(target(1, "f1", Some("b"))));
    assert_eq!(q.ask_next(), None);
}

#[test]
fn idle_slots_count_as_possible_so_asking_fewer_never_makes_a_quorum_impossible() {
    let mut q = place3(needed(3, 0), None, &[]).expect("placed");
    q.idle_remote();
    assert!(
        !q.is_pending(1) && !q.is_pending(2),
        "idle slots take no outcome"
    );
    q.record(LOCAL, ());
    assert_eq!(q.status(), Status::Waiting);
    assert_eq!(q.asks_short(), 2);
    let asked: Vec<Target> = std::iter::from_fn(|| q.ask_next()).collect();
    assert_eq!(asked, vec![target(1, "b", None), target(2, "c", None)]);
    q.record(1, ());
    q.fail(2, all_up);
    assert_eq!(q.status(), impossible(3, 2));
}

#[test]
fn a_failed_slot_of_a_read_places_its_fallback_idle_and_behind_the_primaries() {
    let mut q = place3(needed(2, 0), spare(&["f1"]), &[]).expect("placed");
    q.idle_remote();
    assert_eq!(q.ask_next(), Some(target(1, "b", None)));
    q.fail_idle(1, all_up);
    assert_eq!(q.pending(), 1, "the replacement is not asked by failing");
    assert_eq!(q.asks_short(), 1);
    assert_eq!(q.ask_next(), Some(target(2, "c", None)));
    q.fail_idle(2, all_up);
    // c's replacement finds no fallback left: c is unplaced, f1 (for b) is next.
    assert_eq!(q.unplaced(), ids(&["c"]).as_slice());
    assert_eq!(q.status(), Status::Waiting);
    assert_eq!(q.ask_next(), Some(target(3, "f1", Some("b"))));
}

#[test]
fn pr_asks_primaries_and_counts_what_asked_fallbacks_cannot_give() {
    let mut q = place3(needed(2, 2), spare(&["f1"]), &["b"]).expect("placed");
    q.idle_remote();
    assert_eq!(q.ask_next(), Some(target(2, "c", None)));
    assert_eq!(q.asks_short(), 0);
    q.fail_idle(2, all_up);
    // R could still come from f1, PR no longer can.
    assert_eq!(q.asks_short(), 1);
    assert_eq!(q.status(), impossible(2, 1));
}
