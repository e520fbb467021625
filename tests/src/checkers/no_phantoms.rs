//! No value appears that nobody wrote; no deleted key comes back unless written again.
//!
//! - Every value a read returned was written to that key by a put (acknowledged or not)
//!   invoked before the read ended; a read's `found` agrees with its values.
//! - Every value stored on any replica at the end was written to that key by some put.
//! - A key with an acknowledged delete whose context covered every put ever applied to
//!   that key is not found at the end (a put that delete did not cover is a "later put",
//!   which may legitimately bring the key back).

use std::collections::BTreeSet;

use shoal_proto::SiblingValue;

use super::{show_object, FinalState, Violation};
use crate::history::{show_context, History, OpId, OpKind, Outcome};

/// The checker's name in violations.
pub const NAME: &str = "no_phantoms";

/// Check one completed read.
pub fn check_read(history: &History, id: OpId) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(op) = history.ops.get(id) else {
        return out;
    };
    let (OpKind::Get { .. }, Outcome::Read { found, values, .. }) = (&op.kind, &op.outcome) else {
        return out;
    };
    if *found == values.is_empty() {
        out.push(Violation::new(
            NAME,
            &op.key,
            format!(
                "get #{} answered found={found} with values {values:?}",
                op.id
            ),
        ));
    }
    let ended = op.completed.unwrap_or(op.invoked);
    for v in values {
        let written = history.puts_of(&op.key, v).any(|p| p.invoked <= ended);
        if !written {
            out.push(Violation::new(
                NAME,
                &op.key,
                format!(
                    "get #{} (node {}) returned {v:?}, which no put on this key wrote before \
                     the read ended; all values returned: {values:?}",
                    op.id, op.node
                ),
            ));
        }
    }
    out
}

/// Check every read of `history`, and the final state.
pub fn check(history: &History, state: &FinalState) -> Vec<Violation> {
    let mut out = Vec::new();
    for op in &history.ops {
        out.extend(check_read(history, op.id));
    }
    for (key, ks) in &state.keys {
        for r in &ks.replicas {
            let Some(obj) = &r.object else { continue };
            for s in obj.siblings() {
                let SiblingValue::Data(v) = &s.value else {
                    continue;
                };
                let v = String::from_utf8_lossy(v);
                if history.puts_of(key, &v).next().is_none() {
                    out.push(Violation::new(
                        NAME,
                        key,
                        format!(
                            "node {} stores {v:?}, which no put on this key wrote: {}",
                            r.node,
                            show_object(obj)
                        ),
                    ));
                }
            }
        }
        out.extend(check_deleted(history, key, state));
    }
    out
}

/// A key whose acknowledged delete covered every put applied to it must be gone.
fn check_deleted(history: &History, key: &str, state: &FinalState) -> Vec<Violation> {
    let merged = state.keys.get(key).map(|k| k.merged()).unwrap_or_default();
    if !merged.is_found() {
        return Vec::new();
    }
    let puts: BTreeSet<_> = history
        .coordinations_on(key)
        .filter(|c| matches!(c.value, SiblingValue::Data(_)))
        .map(|c| c.dot)
        .collect();
    for op in history.ops_on(key) {
        let (OpKind::Delete, Outcome::Written { .. }) = (&op.kind, &op.outcome) else {
            continue;
        };
        let ctx = op.context.clone().unwrap_or_default();
        if puts.iter().all(|d| ctx.covers(*d)) {
            return vec![Violation::new(
                NAME,
                key,
                format!(
                    "acknowledged delete #{} with context {} covered every put to the key, \
                     yet the key came back: {}",
                    op.id,
                    show_context(&ctx),
                    show_object(&merged)
                ),
            )];
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use shoal_proto::Dot;

    use super::*;
    use crate::checkers::fixtures::{ctx, delete, get, object, put, state, A};

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_reported() {
        let mut h = History::new();
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, true);
        let g = get(&mut h, "k", &["k=w0", "k=ghost"], 20);
        let v = check_read(&h, g);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, NAME);
        assert!(v[0].detail.contains("k=ghost"));
    }

    #[test]
    fn a_read_of_a_value_written_to_another_key_is_reported() {
        let mut h = History::new();
        put(&mut h, "other", "k=w0", None, Dot::new(A, 1), 10, true);
        let g = get(&mut h, "k", &["k=w0"], 20);
        assert_eq!(check_read(&h, g).len(), 1);
    }

    #[test]
    fn a_read_of_an_unacknowledged_write_is_fine() {
        let mut h = History::new();
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, false);
        let g = get(&mut h, "k", &["k=w0"], 20);
        assert_eq!(check_read(&h, g), vec![]);
    }

    #[test]
    fn a_stored_phantom_is_reported() {
        let mut h = History::new();
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, true);
        let s = state(
            "k",
            vec![Some(object(&[(Some("k=nobody"), Dot::new(A, 7))], &[]))],
        );
        let v = check(&h, &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("k=nobody"));
    }

    #[test]
    fn a_deleted_key_that_comes_back_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        let d2 = Dot::new(A, 2);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), d2, 20);
        // The value resurrected: the replicas forgot the delete.
        let s = state("k", vec![Some(object(&[(Some("k=w0"), d1)], &[d1]))]);
        let v = check(&h, &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("delete"), "{}", v[0].detail);
        // With the tombstone in place it is fine.
        let s = state("k", vec![Some(object(&[(None, d2)], &[d1, d2]))]);
        assert_eq!(check(&h, &s), vec![]);
    }

    #[test]
    fn a_put_after_a_delete_may_bring_the_key_back() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        let d2 = Dot::new(A, 2);
        let d3 = Dot::new(A, 3);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), d2, 20);
        put(&mut h, "k", "k=w2", None, d3, 30, true);
        let s = state(
            "k",
            vec![Some(object(
                &[(None, d2), (Some("k=w2"), d3)],
                &[d1, d2, d3],
            ))],
        );
        assert_eq!(check(&h, &s), vec![]);
    }
}
