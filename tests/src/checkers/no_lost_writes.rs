//! No acknowledged write is lost.
//!
//! Every acknowledged put is in the final state of its key (the merge of every replica's
//! stored object holds a sibling with the put's dot and value), or was superseded: some
//! write that a coordinator applied had a request context covering the put's dot. Every
//! element that an acknowledged set-add put added is in the final set (the union of the
//! elements of the key's final sibling values).
//!
//! No dot is minted twice: replicas keep one value per dot, so of two writes with one
//! dot (a node that lost its dot counter in a power cut and reused it) one is lost.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{Object, SiblingValue};

use super::{show_object, FinalState, Violation};
use crate::history::{set_elements, show_context, History, OpKind, ShowDot};

/// The checker's name in violations.
pub const NAME: &str = "no_lost_writes";

/// Check every acknowledged put of `history` against `state`.
pub fn check(history: &History, state: &FinalState) -> Vec<Violation> {
    let mut out = reused_dots(history);
    let keys: BTreeSet<&str> = history.ops.iter().map(|o| o.key.as_str()).collect();
    for key in keys {
        let merged = state.keys.get(key).map(|k| k.merged()).unwrap_or_default();
        let final_set: BTreeSet<String> = merged
            .values()
            .flat_map(|v| set_elements(&String::from_utf8_lossy(v)))
            .collect();
        for op in history.ops_on(key).filter(|o| o.is_acked_put()) {
            let value = op.put_value().unwrap_or_default();
            let Some(dot) = op.acked_dot() else {
                out.push(Violation::new(
                    NAME,
                    key,
                    format!(
                        "put #{} of {value:?} was acknowledged with a context that adds no dot \
                         to its request context {}",
                        op.id,
                        show_context(op.context.as_ref().unwrap_or(&Default::default()))
                    ),
                ));
                continue;
            };
            match present(&merged, dot) {
                Some(SiblingValue::Data(v)) if v == value.as_bytes() => {}
                Some(other) => out.push(Violation::new(
                    NAME,
                    key,
                    format!(
                        "put #{} of {value:?} has dot {} but the final state holds {other:?} \
                         under that dot: {}",
                        op.id,
                        ShowDot(dot),
                        show_object(&merged)
                    ),
                )),
                None => {
                    if history.superseded(key, dot, None).is_none() {
                        out.push(Violation::new(
                            NAME,
                            key,
                            format!(
                                "acknowledged put #{} of {value:?} (dot {}, acknowledged at \
                                 {:?}) is not in the final state {} and no write's context \
                                 covered it",
                                op.id,
                                ShowDot(dot),
                                op.completed.unwrap_or_default(),
                                show_object(&merged)
                            ),
                        ));
                    }
                }
            }
            if let OpKind::Put {
                set_element: Some(e),
                ..
            } = &op.kind
            {
                if !final_set.contains(e) {
                    out.push(Violation::new(
                        NAME,
                        key,
                        format!(
                            "element {e:?} added by acknowledged put #{} of {value:?} is not \
                             in the final set {final_set:?}",
                            op.id
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// Every coordinated write whose dot an earlier one already had.
fn reused_dots(history: &History) -> Vec<Violation> {
    let mut first = BTreeMap::new();
    let mut out = Vec::new();
    for c in &history.coordinations {
        if let Some(earlier) = first.insert(c.dot, c) {
            out.push(Violation::new(
                NAME,
                &c.key,
                format!(
                    "dot {} was minted twice: by {} for {:?} on key {:?} at {:?}, and by {} \
                     for {:?} at {:?}",
                    ShowDot(c.dot),
                    earlier.node,
                    earlier.value,
                    earlier.key,
                    earlier.at,
                    c.node,
                    c.value,
                    c.at
                ),
            ));
        }
    }
    out
}

fn present(obj: &Object, dot: shoal_proto::Dot) -> Option<SiblingValue> {
    obj.siblings()
        .iter()
        .find(|s| s.dot == dot)
        .map(|s| s.value.clone())
}

#[cfg(test)]
mod tests {
    use shoal_proto::Dot;

    use super::*;
    use crate::checkers::fixtures::{ctx, object, put, state, A, B};
    use crate::history::{OpKind, Outcome};

    #[test]
    fn a_put_missing_from_the_final_state_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        // The replicas know the dot but hold no sibling for it, and no write covered it.
        let s = state("k", vec![Some(object(&[], &[d1])), None, None]);
        let v = check(&h, &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, NAME);
        assert_eq!(v[0].key, "k");
        assert!(v[0].detail.contains("k=w0"), "{}", v[0].detail);
    }

    #[test]
    fn a_put_superseded_by_a_covering_write_is_not_lost() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        let d2 = Dot::new(B, 1);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        put(&mut h, "k", "k=w1", Some(ctx(&[d1])), d2, 20, true);
        let s = state(
            "k",
            vec![Some(object(&[(Some("k=w1"), d2)], &[d1, d2])), None, None],
        );
        assert_eq!(check(&h, &s), vec![]);
    }

    #[test]
    fn an_unacknowledged_put_may_be_missing() {
        let mut h = History::new();
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, false);
        assert_eq!(check(&h, &state("k", vec![None, None, None])), vec![]);
    }

    #[test]
    fn a_dot_minted_twice_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        put(&mut h, "j", "j=w0", None, Dot::new(A, 2), 15, true);
        put(&mut h, "k", "k=w1", None, d1, 20, true);
        let s = state(
            "k",
            vec![Some(object(&[(Some("k=w0"), d1)], &[d1])), None, None],
        );
        let mut s2 = state(
            "j",
            vec![Some(object(
                &[(Some("j=w0"), Dot::new(A, 2))],
                &[Dot::new(A, 2)],
            ))],
        );
        s2.keys.extend(s.keys);
        let v = check(&h, &s2);
        assert!(v.iter().any(|v| v.detail.contains("minted twice")), "{v:?}");
    }

    #[test]
    fn a_dot_holding_another_value_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        let s = state("k", vec![Some(object(&[(Some("k=zz"), d1)], &[d1]))]);
        let v = check(&h, &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("k=zz"));
    }

    #[test]
    fn a_lost_set_element_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        let d2 = Dot::new(A, 2);
        let id = put(&mut h, "s", "s=w0:x0", None, d1, 10, true);
        h.ops[id].kind = OpKind::Put {
            value: "s=w0:x0".into(),
            set_element: Some("x0".into()),
        };
        // A later write covered the first but dropped its element: the put itself is
        // superseded (allowed), the element is lost (not allowed).
        let id2 = put(&mut h, "s", "s=w1:x1", Some(ctx(&[d1])), d2, 20, true);
        h.ops[id2].kind = OpKind::Put {
            value: "s=w1:x1".into(),
            set_element: Some("x1".into()),
        };
        let s = state("s", vec![Some(object(&[(Some("s=w1:x1"), d2)], &[d1, d2]))]);
        let v = check(&h, &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("\"x0\""), "{}", v[0].detail);
        assert!(matches!(h.ops[id].outcome, Outcome::Written { .. }));
    }
}
