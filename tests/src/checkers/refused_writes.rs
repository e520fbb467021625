//! A write refused for the sibling limit (`TooManySiblings`) is stored nowhere.
//!
//! Unlike a timeout, whose write may have landed, the coordinator refuses it before
//! storing anything: no coordinator applied it, no read returns its value, and no replica
//! holds it at the end. (That nothing acknowledged is lost is `no_lost_writes`'s part.)
//!
//! It runs on runs whose network does not duplicate requests: a duplicated request can be
//! applied by one copy and refused by the other, and its client hears one of the answers.
//! The real transport (QUIC streams) never delivers a request twice.

use std::collections::BTreeSet;

use super::{FinalState, Violation};
use crate::history::{History, OpKind, Outcome};

/// The checker's name in violations.
pub const NAME: &str = "refused_writes";

/// How the text of `RequestError::TooManySiblings` starts and what it says next (the
/// history keeps a failed operation's error as text).
const REFUSAL_START: &str = "the key would have ";
const REFUSAL_MIDDLE: &str = " siblings, the limit is ";

/// Whether `outcome` is a refusal for the sibling limit.
pub fn is_sibling_refusal(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(why)
        if why.starts_with(REFUSAL_START) && why.contains(REFUSAL_MIDDLE))
}

/// Check the whole history and the final state.
pub fn check(history: &History, state: &FinalState) -> Vec<Violation> {
    let refused: BTreeSet<(&str, &str)> = history
        .ops
        .iter()
        .filter(|op| is_sibling_refusal(&op.outcome))
        .filter_map(|op| match &op.kind {
            OpKind::Put { value, .. } => Some((op.key.as_str(), value.as_str())),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    if refused.is_empty() {
        return out;
    }
    for c in &history.coordinations {
        if let Some(v) = c.value_text() {
            if refused.contains(&(c.key.as_str(), v.as_str())) {
                out.push(Violation::new(
                    NAME,
                    &c.key,
                    format!(
                        "{v:?} was refused for the sibling limit but {} applied it",
                        c.node
                    ),
                ));
            }
        }
    }
    for op in &history.ops {
        let Outcome::Read { values, .. } = &op.outcome else {
            continue;
        };
        for v in values {
            if refused.contains(&(op.key.as_str(), v.as_str())) {
                out.push(Violation::new(
                    NAME,
                    &op.key,
                    format!(
                        "get #{} returned {v:?}, a write refused for the sibling limit",
                        op.id
                    ),
                ));
            }
        }
    }
    for (key, ks) in &state.keys {
        for copy in &ks.replicas {
            let Some(object) = &copy.object else {
                continue;
            };
            for v in object.values() {
                let v = String::from_utf8_lossy(v);
                if refused.contains(&(key.as_str(), v.as_ref())) {
                    out.push(Violation::new(
                        NAME,
                        key,
                        format!(
                            "{} stores {v:?}, a write refused for the sibling limit",
                            copy.node
                        ),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_proto::RequestError;

    use super::*;

    #[test]
    fn the_refusal_is_recognised_by_the_error_text_and_nothing_else_is() {
        let refusal = RequestError::TooManySiblings {
            siblings: 4,
            limit: 3,
        };
        assert!(is_sibling_refusal(&Outcome::Failed(refusal.to_string())));
        let other = RequestError::ObjectTooLarge { len: 4, max: 3 };
        assert!(!is_sibling_refusal(&Outcome::Failed(other.to_string())));
        assert!(!is_sibling_refusal(&Outcome::TimedOut));
    }
}
