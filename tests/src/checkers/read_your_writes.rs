//! With R + W > N and no faults, a read returns the latest acknowledged write.
//!
//! A get invoked after a put on the same key was acknowledged returns that put's value,
//! or the put was superseded by then: a write whose request context covered the put's dot
//! had been applied by the time the get ended (its value, or its own successor's, is what
//! the get may return; a covering delete may make the key not found).
//!
//! Only meaningful in runs without faults whose quorums overlap; the simulator enables it
//! only there.

use super::Violation;
use crate::history::{History, OpId, OpKind, Outcome, ShowDot};

/// The checker's name in violations.
pub const NAME: &str = "read_your_writes";

/// Check one completed get against every put acknowledged before it started.
pub fn check_read(history: &History, id: OpId) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(get) = history.ops.get(id) else {
        return out;
    };
    let (OpKind::Get { .. }, Outcome::Read { values, .. }) = (&get.kind, &get.outcome) else {
        return out;
    };
    let ended = get.completed.unwrap_or(get.invoked);
    for put in history.ops_on(&get.key).filter(|o| o.is_acked_put()) {
        let acked = put.completed.unwrap_or(put.invoked);
        if acked >= get.invoked {
            continue;
        }
        let value = put.put_value().unwrap_or_default();
        if values.iter().any(|v| v == value) {
            continue;
        }
        let Some(dot) = put.acked_dot() else {
            continue;
        };
        if history.superseded(&get.key, dot, Some(ended)).is_some() {
            continue;
        }
        out.push(Violation::new(
            NAME,
            &get.key,
            format!(
                "get #{} (node {}, invoked {:?}) returned {values:?}, missing {value:?} of put \
                 #{} (dot {}, acknowledged {:?}), which nothing had superseded",
                get.id,
                get.node,
                get.invoked,
                put.id,
                ShowDot(dot),
                acked
            ),
        ));
    }
    out
}

/// Check every get of `history`.
pub fn check(history: &History) -> Vec<Violation> {
    history
        .ops
        .iter()
        .flat_map(|o| check_read(history, o.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use shoal_proto::Dot;

    use super::*;
    use crate::checkers::fixtures::{ctx, get, put, A};

    #[test]
    fn a_stale_read_after_an_acknowledged_put_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        let d2 = Dot::new(A, 2);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        put(&mut h, "k", "k=w1", Some(ctx(&[d1])), d2, 20, true);
        // Acknowledged at 21; a read at 30 still sees the old value.
        let g = get(&mut h, "k", &["k=w0"], 30);
        let v = check_read(&h, g);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, NAME);
        assert!(v[0].detail.contains("k=w1"));
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn a_read_of_a_superseding_value_is_fine() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        let d2 = Dot::new(A, 2);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        put(&mut h, "k", "k=w1", Some(ctx(&[d1])), d2, 20, true);
        let g = get(&mut h, "k", &["k=w1"], 30);
        assert_eq!(check_read(&h, g), vec![]);
    }

    #[test]
    fn a_read_concurrent_with_the_put_may_miss_it() {
        let mut h = History::new();
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, true);
        // Invoked at 11, when the put was acknowledged: not after it.
        let g = get(&mut h, "k", &[], 11);
        assert_eq!(check_read(&h, g), vec![]);
    }
}
