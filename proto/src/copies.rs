//! What R primaries' own copies of a key answer a read with: the rule of direct reads
//! (wire version 6), shared by the SDK and the simulator's model of it.
//!
//! A coordinator reading those R primaries answers the merge of their copies. When one
//! copy's context includes every other copy's, that merge is the copy itself: a sibling
//! of another copy is either in it (the same dot) or covered by its context, so dropped,
//! and none of its own siblings is covered by a context that does not hold it (a context
//! holding a dot without its sibling saw a later write replace it, and the including
//! copy saw that write too). So the read can answer with that copy, without the second
//! hop, as it does when every copy is equal. Copies concurrent with each other (neither
//! context includes the other), equal contexts with different values (not a well-formed
//! pair), or copies under different layout versions are left to a coordinator.

use crate::wire::{GetReply, ReplicaReply};

/// How R copies answer a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopiesVerdict {
    /// Every copy is the same: the answer.
    Agreed(GetReply),
    /// One copy includes every other and some are behind it: the answer, and the
    /// positions (in the slice judged) of the copies behind it, which a coordinator's
    /// read repair brings up to date.
    Superseding {
        /// The including copy.
        reply: GetReply,
        /// Positions of the copies behind it.
        behind: Vec<usize>,
    },
    /// Only a coordinator's merge answers: concurrent copies, copies under different
    /// layout versions, or no copy.
    Differ,
}

/// Judges the copies R primaries returned (see the module's text).
pub fn judge_copies(copies: &[ReplicaReply]) -> CopiesVerdict {
    let Some(first) = copies.first() else {
        return CopiesVerdict::Differ;
    };
    if copies
        .iter()
        .any(|c| c.layout_version != first.layout_version)
    {
        return CopiesVerdict::Differ;
    }
    // The copy whose context includes every other's, if there is one.
    let Some(best) = copies.iter().position(|candidate| {
        copies
            .iter()
            .all(|c| candidate.get.context.includes(&c.get.context))
    }) else {
        return CopiesVerdict::Differ;
    };
    let reply = &copies[best].get;
    let mut behind = Vec::new();
    for (i, c) in copies.iter().enumerate() {
        if c.get == *reply {
            continue;
        }
        if c.get.context.includes(&reply.context) {
            // The same context with other values: not a pair of well-formed copies.
            return CopiesVerdict::Differ;
        }
        behind.push(i);
    }
    if behind.is_empty() {
        CopiesVerdict::Agreed(reply.clone())
    } else {
        CopiesVerdict::Superseding {
            reply: reply.clone(),
            behind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, CausalContext, Dot, Object, SiblingValue, Time};

    fn copy(version: u64, object: &Object) -> ReplicaReply {
        ReplicaReply {
            layout_version: version,
            get: crate::get_reply(object),
        }
    }

    fn write(object: &mut Object, ctx: &CausalContext, actor: u64, counter: u64, v: &str) {
        object
            .update(
                ctx,
                SiblingValue::Data(v.as_bytes().to_vec()),
                Dot::new(Actor(actor), counter),
                Time::from_micros(counter),
            )
            .unwrap();
    }

    #[test]
    fn equal_copies_agree() {
        let mut a = Object::new();
        write(&mut a, &CausalContext::new(), 1, 1, "v1");
        assert_eq!(
            judge_copies(&[copy(3, &a), copy(3, &a)]),
            CopiesVerdict::Agreed(crate::get_reply(&a))
        );
    }

    #[test]
    fn a_copy_that_missed_a_later_write_is_behind_the_one_that_has_it() {
        let mut old = Object::new();
        write(&mut old, &CausalContext::new(), 1, 1, "v1");
        let mut new = old.clone();
        write(&mut new, &old.context(), 1, 2, "v2");
        // Either order: the newer copy answers, and the coordinator's merge is the same.
        let merged = Object::merged(&old, &new);
        assert_eq!(crate::get_reply(&merged), crate::get_reply(&new));
        for (copies, behind) in [
            ([copy(3, &old), copy(3, &new)], 0),
            ([copy(3, &new), copy(3, &old)], 1),
        ] {
            assert_eq!(
                judge_copies(&copies),
                CopiesVerdict::Superseding {
                    reply: crate::get_reply(&new),
                    behind: vec![behind],
                }
            );
        }
    }

    #[test]
    fn a_copy_without_the_key_is_behind_one_that_has_it() {
        let mut a = Object::new();
        write(&mut a, &CausalContext::new(), 1, 1, "v1");
        assert_eq!(
            judge_copies(&[copy(3, &Object::new()), copy(3, &a), copy(3, &a)]),
            CopiesVerdict::Superseding {
                reply: crate::get_reply(&a),
                behind: vec![0],
            }
        );
    }

    #[test]
    fn concurrent_copies_and_other_layout_versions_go_to_a_coordinator() {
        let mut a = Object::new();
        write(&mut a, &CausalContext::new(), 1, 1, "from 1");
        let mut b = Object::new();
        write(&mut b, &CausalContext::new(), 2, 1, "from 2");
        assert_eq!(
            judge_copies(&[copy(3, &a), copy(3, &b)]),
            CopiesVerdict::Differ
        );
        let mut newer = a.clone();
        write(&mut newer, &a.context(), 1, 2, "v2");
        assert_eq!(
            judge_copies(&[copy(3, &a), copy(4, &newer)]),
            CopiesVerdict::Differ
        );
        assert_eq!(judge_copies(&[]), CopiesVerdict::Differ);
    }

    #[test]
    fn the_same_context_with_other_values_goes_to_a_coordinator() {
        let mut a = Object::new();
        write(&mut a, &CausalContext::new(), 1, 1, "v1");
        let mut odd = crate::get_reply(&a);
        odd.values = vec![b"something else".to_vec()];
        let copies = [
            copy(3, &a),
            ReplicaReply {
                layout_version: 3,
                get: odd,
            },
        ];
        assert_eq!(judge_copies(&copies), CopiesVerdict::Differ);
    }
}
