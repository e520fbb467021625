//! No deleted key comes back unless written again — also after its tombstone was reaped.
//!
//! A tombstone is the cluster's memory that the values it replaced are dead; reaping
//! deletes that memory, and from then on only the rules of reaping (every primary
//! agrees, hints expire first) keep those values away. [`super::no_phantoms`] checks that
//! a key whose delete covered *every* put is not found at the end; that misses a replaced
//! value that comes back next to a later write, and reads during the run. This checker
//! follows each value:
//!
//! - **Reads after a reap.** Once a node has reaped a key's tombstone object (whose clock
//!   is everything the delete had seen), no read invoked later returns a value that clock
//!   covers: a read finds nothing, or values written after (or concurrently with) the
//!   delete. Before the reap a stale replica may still answer with a replaced value; after
//!   it, no primary holds one, so only a late hint or a stray repair could bring it back.
//! - **The final state.** The merge of every replica's copy holds no data sibling whose
//!   dot the request context of some applied write on the key covers: a value that a
//!   write replaced stays replaced. Without reaping this follows from causality (the
//!   coordinator of the replacing write keeps a clock that covers the dot, and merging
//!   with it drops the sibling); with reaping it is exactly "the key did not come back".

use super::{show_object, FinalState, Violation};
use crate::history::{show_context, History, OpId, OpKind, Outcome, ShowDot};

/// The checker's name in violations.
pub const NAME: &str = "no_resurrection";

/// Check one completed read against the reapings recorded before it was invoked.
pub fn check_read(history: &History, id: OpId) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(op) = history.ops.get(id) else {
        return out;
    };
    let (OpKind::Get { .. }, Outcome::Read { values, .. }) = (&op.kind, &op.outcome) else {
        return out;
    };
    for reap in history.reaps_of(&op.key).filter(|r| r.at < op.invoked) {
        let clock = reap.object.clock();
        for v in values {
            let dots = history.dots_of_value(&op.key, v);
            // A value written twice (a forwarded put coordinated on two nodes) is
            // resurrected only if every write of it was replaced.
            if !dots.is_empty() && dots.iter().all(|d| clock.covers(*d)) {
                let shown: Vec<String> = dots.iter().map(|d| ShowDot(*d).to_string()).collect();
                out.push(Violation::new(
                    NAME,
                    &op.key,
                    format!(
                        "get #{} (node {}, invoked {:?}) returned {v:?} (dot {}), which the \
                         tombstone {} that node {} reaped at {:?} had replaced",
                        op.id,
                        op.node,
                        op.invoked,
                        shown.join("/"),
                        show_object(&reap.object),
                        reap.node,
                        reap.at
                    ),
                ));
            }
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
        let merged = ks.merged();
        for s in merged.siblings() {
            if s.is_tombstone() {
                continue;
            }
            let Some(by) = history.superseded(key, s.dot, None) else {
                continue;
            };
            let reaped = history.reaps_of(key).count();
            out.push(Violation::new(
                NAME,
                key,
                format!(
                    "the final state holds dot {} although the write of dot {} at {:?} \
                     (context {}) replaced it ({reaped} reapings of the key): {}",
                    ShowDot(s.dot),
                    ShowDot(by.dot),
                    by.at,
                    show_context(&by.context),
                    show_object(&merged)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_proto::Dot;

    use super::*;
    use crate::checkers::fixtures::{ctx, delete, get, object, put, state, t, A, B};
    use crate::history::Reaping;

    fn reap(h: &mut History, key: &str, tomb: Dot, clock: &[Dot], at_ms: u64) {
        h.reaps.push(Reaping {
            node: "n0".into(),
            key: key.into(),
            object: object(&[(None, tomb)], clock),
            at: t(at_ms),
        });
    }

    #[test]
    fn a_replaced_value_read_after_the_reap_is_reported() {
        let mut h = History::new();
        let (d1, d2) = (Dot::new(A, 1), Dot::new(A, 2));
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), d2, 20);
        reap(&mut h, "k", d2, &[d1, d2], 100);
        // Before the reap a stale replica may answer with it.
        let early = get(&mut h, "k", &["k=w0"], 50);
        assert_eq!(check_read(&h, early), vec![]);
        let late = get(&mut h, "k", &["k=w0"], 200);
        let v = check_read(&h, late);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, NAME);
        assert!(v[0].detail.contains("k=w0"), "{}", v[0].detail);
        // Not found after the reap is what must happen.
        let gone = get(&mut h, "k", &[], 300);
        assert_eq!(check_read(&h, gone), vec![]);
    }

    #[test]
    fn a_value_written_after_the_delete_may_be_read_after_the_reap() {
        let mut h = History::new();
        let (d1, d2, d3) = (Dot::new(A, 1), Dot::new(A, 2), Dot::new(B, 1));
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), d2, 20);
        reap(&mut h, "k", d2, &[d1, d2], 100);
        put(&mut h, "k", "k=w2", None, d3, 150, true);
        let g = get(&mut h, "k", &["k=w2"], 200);
        assert_eq!(check_read(&h, g), vec![]);
        let s = state("k", vec![Some(object(&[(Some("k=w2"), d3)], &[d3]))]);
        assert_eq!(check(&h, &s), vec![]);
    }

    #[test]
    fn a_replaced_value_next_to_a_later_write_in_the_final_state_is_reported() {
        let mut h = History::new();
        let (d1, d2, d3) = (Dot::new(A, 1), Dot::new(A, 2), Dot::new(B, 1));
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), d2, 20);
        reap(&mut h, "k", d2, &[d1, d2], 100);
        put(&mut h, "k", "k=w2", None, d3, 150, true);
        // k=w0 came back (a late hint) and sits next to the later write: no_phantoms's
        // "a delete covered every put" rule does not see it, this one does.
        let s = state(
            "k",
            vec![Some(object(
                &[(Some("k=w0"), d1), (Some("k=w2"), d3)],
                &[d1, d3],
            ))],
        );
        assert_eq!(crate::checkers::no_phantoms::check(&h, &s), vec![]);
        let v = check(&h, &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].detail.contains(&ShowDot(d1).to_string()),
            "{}",
            v[0].detail
        );
    }

    #[test]
    fn without_reaping_a_tombstoned_key_passes() {
        let mut h = History::new();
        let (d1, d2) = (Dot::new(A, 1), Dot::new(A, 2));
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), d2, 20);
        let s = state("k", vec![Some(object(&[(None, d2)], &[d1, d2]))]);
        assert_eq!(check(&h, &s), vec![]);
    }
}
