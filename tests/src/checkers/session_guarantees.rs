//! Every read a session answered shows its own writes and never goes back in time.
//!
//! A session is one client of the run (`History::sessions`); its gets are marked by what
//! they were to the session (answered, escalated, not covered). The checker judges only
//! the answered ones, by values, not by the contexts the session itself trusted:
//!
//! - **read your writes**: for each put the session had acknowledged before the read
//!   began, the read returns its value, or a write whose request context covered the
//!   put's dot had been applied by the time the read ended; and it returns no value that
//!   one of the session's acknowledged writes (sent with a context) replaced;
//! - **monotonic reads**: each value an earlier answered read of the key returned is
//!   returned again, or was replaced (as above) by the time this read ended.
//!
//! A write that was never acknowledged and whose every copy was lost later (stranded:
//! `History::stranded`) still replaced what its context covered for a read that returned
//! its value while it existed.
//!
//! Reads the session refused (`NotCovered`) are allowed under any fault and only counted.

use super::Violation;
use crate::history::{History, OpKind, Operation, Outcome, SessionRead, ShowDot};

/// The checker's name in violations.
pub const NAME: &str = "session_guarantees";

/// Check every answered read of every session of `history`.
pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for &client in &history.sessions.clients {
        let ops: Vec<&Operation> = history.ops.iter().filter(|o| o.client == client).collect();
        for (i, read) in ops.iter().enumerate() {
            if history.sessions.reads.get(&read.id) != Some(&SessionRead::Answered) {
                continue;
            }
            let earlier = ops[..i].iter().filter(|o| o.key == read.key);
            for before in earlier {
                out.extend(check_pair(history, before, read));
            }
        }
    }
    out
}

/// What `before` (an earlier operation of the same session on the same key) requires of
/// the answered read `read`.
fn check_pair(history: &History, before: &Operation, read: &Operation) -> Vec<Violation> {
    let mut out = Vec::new();
    let Outcome::Read { values, .. } = &read.outcome else {
        return out;
    };
    let ended = read.completed.unwrap_or(read.invoked);
    if before.completed.is_none_or(|t| t > read.invoked) {
        return out;
    }
    // Replaced by a write applied by the time the read ended, or by a write the read
    // returned that was lost afterwards (stranded: never acknowledged, every copy lost).
    let superseded = |d| {
        history.superseded(&read.key, d, Some(ended)).is_some()
            || history.replaced_by_shown_stranded(&read.key, d, ended, values)
    };
    let replaced = |value: &str| {
        history
            .dots_of_value(&read.key, value)
            .into_iter()
            .any(superseded)
    };
    match (&before.kind, &before.outcome) {
        (OpKind::Put { value, .. }, Outcome::Written { .. })
            if !values.contains(value) && !before.acked_dot().is_none_or(superseded) =>
        {
            out.push(Violation::new(
                NAME,
                &read.key,
                format!(
                    "read your writes: session {} get #{} returned {values:?}, missing \
                     {value:?} of its own put #{} (dot {}), which nothing had replaced",
                    read.client,
                    read.id,
                    before.id,
                    before
                        .acked_dot()
                        .map(|d| ShowDot(d).to_string())
                        .unwrap_or_default(),
                ),
            ));
        }
        (OpKind::Get { .. }, Outcome::Read { values: seen, .. })
            if history.sessions.reads.get(&before.id) == Some(&SessionRead::Answered) =>
        {
            for v in seen.iter().filter(|v| !values.contains(v)) {
                if !history.dots_of_value(&read.key, v).is_empty() && !replaced(v) {
                    out.push(Violation::new(
                        NAME,
                        &read.key,
                        format!(
                            "monotonic reads: session {} get #{} returned {values:?}, missing \
                             {v:?} that its earlier get #{} returned and nothing had replaced",
                            read.client, read.id, before.id
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    // A value the session's own write (sent with a context) replaced must not come back.
    if let (Some(ctx), Outcome::Written { .. }) = (&before.context, &before.outcome) {
        for v in values {
            let dots = history.dots_of_value(&read.key, v);
            if !dots.is_empty() && dots.iter().all(|d| ctx.covers(*d)) {
                out.push(Violation::new(
                    NAME,
                    &read.key,
                    format!(
                        "read your writes: session {} get #{} returned {v:?}, which its own \
                         {} #{} had replaced",
                        read.client,
                        read.id,
                        before.kind.name(),
                        before.id
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_proto::{CausalContext, Dot};

    use super::*;
    use crate::checkers::fixtures::{ctx, delete, get, put, A, B};

    fn session(h: &mut History, answered: &[usize]) {
        h.sessions.clients.insert(0);
        for &id in answered {
            h.sessions.reads.insert(id, SessionRead::Answered);
        }
    }

    #[test]
    fn an_answered_read_missing_the_sessions_put_is_reported() {
        let mut h = History::new();
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, true);
        let g = get(&mut h, "k", &[], 20);
        session(&mut h, &[g]);
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("read your writes"), "{v:?}");
        // The same read refused as not covered is fine.
        h.sessions.reads.insert(g, SessionRead::NotCovered);
        assert_eq!(check(&h), vec![]);
        // And so is a plain client's stale read.
        h.sessions = Default::default();
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_read_of_a_value_the_sessions_delete_removed_is_reported() {
        let mut h = History::new();
        let d1 = Dot::new(A, 1);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        delete(&mut h, "k", ctx(&[d1]), Dot::new(A, 2), 20);
        let g = get(&mut h, "k", &["k=w0"], 30);
        session(&mut h, &[g]);
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("had replaced"), "{v:?}");
    }

    /// Simulator seed 2500335 (`--sessions --layout-changes --group-commit`): another
    /// client's put replaced the session's value but was never acknowledged, the session
    /// read it, and then its only copy was lost with a removed node (stranded, taken out
    /// of the coordinations before the checks). The read was right when it was made.
    #[test]
    fn a_read_of_a_write_lost_later_saw_what_that_write_replaced() {
        let mut h = History::new();
        let d1 = Dot::new(A, 3);
        put(&mut h, "k", "k=w0", None, d1, 10, true);
        put(
            &mut h,
            "k",
            "k=w1",
            Some(ctx(&[d1])),
            Dot::new(A, 7),
            20,
            false,
        );
        h.ops.last_mut().unwrap().client = 1;
        let g = get(&mut h, "k", &["k=w1"], 30);
        session(&mut h, &[g]);
        assert_eq!(check(&h), vec![]);
        let lost = h.coordinations.pop().unwrap();
        h.stranded.push(lost);
        assert_eq!(check(&h), vec![], "the read returned the stranded write");
        // A read that did not return the stranded write is judged without it.
        h.ops[g].outcome = Outcome::Read {
            found: false,
            values: Vec::new(),
            context: CausalContext::new(),
        };
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("read your writes"), "{v:?}");
    }

    #[test]
    fn going_back_to_an_older_value_is_reported_and_a_replaced_one_is_not() {
        let mut h = History::new();
        // Another client's two concurrent puts; the session reads both, then one.
        put(&mut h, "k", "k=w0", None, Dot::new(A, 1), 10, true);
        put(&mut h, "k", "k=w1", None, Dot::new(B, 1), 11, true);
        for op in &mut h.ops {
            op.client = 1;
        }
        let g1 = get(&mut h, "k", &["k=w0", "k=w1"], 20);
        let g2 = get(&mut h, "k", &["k=w0"], 30);
        session(&mut h, &[g1, g2]);
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("monotonic reads"), "{v:?}");
        // A write replacing k=w1 before the second read ended makes it fine.
        put(
            &mut h,
            "k",
            "k=w2",
            Some(ctx(&[Dot::new(B, 1)])),
            Dot::new(B, 2),
            25,
            true,
        );
        h.ops.last_mut().unwrap().client = 1;
        assert_eq!(check(&h), vec![]);
    }
}
